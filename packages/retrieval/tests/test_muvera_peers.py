"""Peers: our FDEs against muvera-python (a port of google/graph-mining's fixed_dimensional_encoding).

The random generators differ, so the encodings are compared two ways: (1) given muvera-python's own random
matrices, ours must produce the same FDEs (except where the reference's empty-partition filling decodes partitions
differently, see `paperzoo.retrieval.late.muvera.fde`); (2) with each library's own randomness, the recall and the
Chamfer-correlation statistics must agree.
"""

import numpy as np
import pytest
import torch

from paperzoo.retrieval.late.muvera.check import QUICK, synthetic_corpus
from paperzoo.retrieval.late.muvera.fde import FDEConfig, FDERandomness, encode, gray_code_rank
from paperzoo.retrieval.late.muvera.pipeline import recall_of_true_top
from paperzoo.retrieval.late.scoring import maxsim

pytestmark = pytest.mark.peers


def their_randomness(config: FDEConfig, dim: int) -> FDERandomness:
    """muvera-python's matrices: repetition r draws its SimHash and AMS matrices from seed + r, and its Count
    Sketch from seed."""
    from muvera.helper import ams_projection_matrix_from_seed, simhash_matrix_from_seed

    R, seed = config.repetitions, config.seed
    hyperplanes = torch.stack(
        [torch.from_numpy(simhash_matrix_from_seed(dim, config.k_sim, seed + r)) for r in range(R)]
    )
    projection = None
    if config.d_proj is not None:
        projection = torch.stack(
            [torch.from_numpy(ams_projection_matrix_from_seed(dim, config.d_proj, seed + r)) for r in range(R)]
        )
    bucket, sign = None, None
    if config.final_dim is not None:
        rng = np.random.default_rng(seed)
        raw = config.raw_dim(dim)
        bucket = torch.from_numpy(rng.integers(0, config.final_dim, size=raw))
        sign = torch.from_numpy(rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=raw))
    return FDERandomness(hyperplanes, projection, bucket, sign)


def their_encoder(config: FDEConfig, dim: int):  # noqa: ANN201 - a muvera.Muvera
    from muvera import Muvera

    return Muvera(
        num_repetitions=config.repetitions,
        num_simhash_projections=config.k_sim,
        dimension=dim,
        projection_type="identity" if config.d_proj is None else "ams_sketch",
        projection_dimension=config.d_proj,
        fill_empty_partitions=config.fill_empty,
        final_projection_dimension=config.final_dim,
        seed=config.seed,
    )


def variable_sets(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 12, generator=generator) for n in (1, 9, 30, 4, 17)]


def padded(sets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    vectors = torch.zeros(len(sets), max(len(s) for s in sets), sets[0].shape[1])
    mask = torch.zeros(vectors.shape[:2], dtype=torch.bool)
    for i, s in enumerate(sets):
        vectors[i, : len(s)], mask[i, : len(s)] = s, True
    return vectors, mask


@pytest.mark.parametrize(
    "config",
    [
        FDEConfig(k_sim=2, d_proj=None, repetitions=3, seed=7),
        FDEConfig(k_sim=2, d_proj=5, repetitions=3, seed=1),
        FDEConfig(k_sim=4, d_proj=None, repetitions=2, fill_empty=False),
        FDEConfig(k_sim=5, d_proj=6, repetitions=4, fill_empty=False, seed=3),
        FDEConfig(k_sim=0, d_proj=4, repetitions=2),
        FDEConfig(k_sim=2, d_proj=4, repetitions=3, final_dim=50, seed=2),
    ],
    ids=lambda c: f"k{c.k_sim}-p{c.d_proj}-fill{c.fill_empty}-f{c.final_dim}",
)
def test_same_random_matrices_give_the_same_fdes(config):
    pytest.importorskip("muvera")
    sets = variable_sets()
    vectors, mask = padded(sets)
    randomness = their_randomness(config, 12)
    theirs = their_encoder(config, 12)
    arrays = [s.numpy() for s in sets]
    for is_query, reference in ((True, theirs.encode_queries(arrays)), (False, theirs.encode_documents(arrays))):
        ours = encode(vectors, mask, config, is_query, randomness=randomness)
        np.testing.assert_allclose(ours.numpy(), reference, atol=1e-4, rtol=1e-4)


def test_their_filling_compares_a_vector_with_other_bits_than_its_own_partition():
    # the documented deviation: for k_sim >= 3 the reference decodes a partition index with GrayCodeToBinary, so a
    # vector is not at Hamming distance 0 from its own partition; ours is
    pytest.importorskip("muvera")
    from muvera.helper import distance_to_partition, partition_index_gray

    generator = np.random.default_rng(0)
    sketches = generator.normal(size=(200, 4)).astype(np.float32)
    theirs = [distance_to_partition(s, partition_index_gray(s)) for s in sketches]
    ranks = gray_code_rank(torch.from_numpy(sketches > 0))
    assert ranks.tolist() == [partition_index_gray(s) for s in sketches]  # the same partitions
    assert max(theirs) > 0


def test_recall_and_chamfer_correlation_agree_with_muvera_python():
    pytest.importorskip("muvera")
    from dataclasses import replace

    setting = replace(QUICK, documents=400, queries=40)
    docs, doc_mask, queries, query_mask = synthetic_corpus(setting)
    chamfer = maxsim(queries, query_mask, docs, doc_mask)
    true_ids = chamfer.topk(10, dim=1).indices
    doc_sets = [d[m].numpy() for d, m in zip(docs, doc_mask, strict=True)]
    query_sets = [q[m].numpy() for q, m in zip(queries, query_mask, strict=True)]
    stats: dict[str, list[tuple[float, float]]] = {"ours": [], "theirs": []}
    for seed in range(3):
        config = FDEConfig(k_sim=4, d_proj=16, repetitions=10, seed=seed)
        ours = encode(queries, query_mask, config, True) @ encode(docs, doc_mask, config, False).T
        muvera = their_encoder(config, docs.shape[-1])
        theirs = torch.from_numpy(muvera.encode_queries(query_sets) @ muvera.encode_documents(doc_sets).T)
        for name, scores in (("ours", ours), ("theirs", theirs)):
            recall = recall_of_true_top(scores.topk(40, dim=1).indices, true_ids)
            pearson = float(torch.corrcoef(torch.stack([scores.flatten(), chamfer.flatten()]))[0, 1])
            stats[name].append((recall, pearson))
    mean = {name: np.mean(values, axis=0) for name, values in stats.items()}
    assert abs(mean["ours"][0] - mean["theirs"][0]) < 0.05, mean  # recall@40 of the Chamfer top-10
    assert abs(mean["ours"][1] - mean["theirs"][1]) < 0.03, mean  # Pearson correlation with Chamfer
    assert mean["ours"][0] > 0.5 and mean["ours"][1] > 0.5, mean
