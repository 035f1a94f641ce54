"""MUVERA's Fixed Dimensional Encodings against a naive per-set loop and hand-computed cases."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.late.muvera.fde import (
    FDEConfig,
    FDERandomness,
    encode,
    encode_documents,
    encode_queries,
    fde_randomness,
    gray_code_rank,
    partition_bits,
)
from paperzoo.retrieval.late.scoring import maxsim


def naive_rank(bits: list[int]) -> int:
    """The reference implementation's AppendToGrayCode loop, bit by bit."""
    rank = 0
    for bit in bits:
        rank = (rank << 1) + (bit ^ (rank & 1))
    return rank


def naive_fde(points: torch.Tensor, config: FDEConfig, randomness: FDERandomness, is_query: bool) -> torch.Tensor:
    """One set [n, D] -> its FDE, one vector at a time in plain loops (no padding, no batching)."""
    k, P = config.k_sim, config.num_partitions
    codes = {naive_rank(list(bits)): list(bits) for bits in itertools.product([0, 1], repeat=k)}  # rank -> bits
    blocks = []
    for r in range(config.repetitions):
        proj = randomness.projection[r] if randomness.projection is not None else torch.eye(points.shape[1])
        e = proj.shape[1]
        cells = [torch.zeros(e, dtype=torch.float64) for _ in range(P)]
        counts = [0] * P
        all_bits = []
        for x in points:
            bits = [int(float(x.double() @ randomness.hyperplanes[r, :, j].double()) > 0) for j in range(k)]
            all_bits.append(bits)
            p = naive_rank(bits)
            cells[p] += x.double() @ proj.double()
            counts[p] += 1
        for p in range(P):
            if is_query:
                continue
            if counts[p]:
                cells[p] /= counts[p]
            elif config.fill_empty and k > 0 and len(points):
                distances = [sum(a != b for a, b in zip(bits, codes[p], strict=True)) for bits in all_bits]
                nearest = distances.index(min(distances))
                cells[p] = points[nearest].double() @ proj.double()
        blocks.extend(cells)
    fde = torch.cat(blocks)
    if config.final_dim is not None:
        out = torch.zeros(config.final_dim, dtype=torch.float64)
        for i, value in enumerate(fde):
            out[randomness.sketch_bucket[i]] += randomness.sketch_sign[i] * value
        fde = out
    return fde.float()


def padded(sets: list[torch.Tensor], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sets)
    vectors = torch.full((len(sets), length, sets[0].shape[1]), pad_value)
    mask = torch.zeros(len(sets), length, dtype=torch.bool)
    for i, s in enumerate(sets):
        vectors[i, : len(s)], mask[i, : len(s)] = s, True
    return vectors, mask


@pytest.fixture
def sets() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(n, 6, generator=generator) for n in (1, 7, 3, 12, 5)]


CONFIGS = [
    FDEConfig(k_sim=0, d_proj=None, repetitions=1),
    FDEConfig(k_sim=1, d_proj=None, repetitions=2, seed=3),
    FDEConfig(k_sim=3, d_proj=4, repetitions=3, projection="ams"),
    FDEConfig(k_sim=3, d_proj=5, repetitions=2, projection="rademacher", seed=1),
    FDEConfig(k_sim=4, d_proj=None, repetitions=2, fill_empty=False),
    FDEConfig(k_sim=2, d_proj=3, repetitions=3, final_dim=17, seed=9),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"k{c.k_sim}-p{c.d_proj}-{c.projection}-f{c.final_dim}")
@pytest.mark.parametrize("is_query", [True, False], ids=["query", "document"])
def test_vectorised_equals_the_naive_loop(sets, config, is_query):
    vectors, mask = padded(sets, pad_value=7.0)  # padding holds garbage that the mask must hide
    ours = encode(vectors, mask, config, is_query, batch_size=2)  # several chunks
    randomness = fde_randomness(config, 6)
    expected = torch.stack([naive_fde(s, config, randomness, is_query) for s in sets])
    assert ours.shape == (len(sets), config.output_dim(6))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_gray_code_ranks_hand_computed():
    # rank bit j = XOR of the hyperplane bits 1..j: 1011 -> 1,1,0,1 = 13
    assert gray_code_rank(torch.tensor([1, 0, 1, 1])) == 13
    table = {
        (0, 0, 0): 0,
        (0, 0, 1): 1,
        (0, 1, 1): 2,
        (0, 1, 0): 3,
        (1, 1, 0): 4,
        (1, 1, 1): 5,
        (1, 0, 1): 6,
        (1, 0, 0): 7,
    }
    for bits, rank in table.items():
        assert int(gray_code_rank(torch.tensor(bits))) == rank
        assert naive_rank(list(bits)) == rank
    codes = partition_bits(3)
    assert codes.tolist() == [list(map(float, bits)) for bits, _ in sorted(table.items(), key=lambda kv: kv[1])]
    # the point of the ordering: neighbouring partitions differ in exactly one hyperplane
    assert ((codes[1:] - codes[:-1]).abs().sum(1) == 1).all()
    batch = torch.tensor([[[1, 0, 1, 1], [0, 0, 0, 1]]])
    assert gray_code_rank(batch).tolist() == [[13, 1]]


def test_partition_bits_invert_the_rank():
    for k in range(1, 7):
        codes = partition_bits(k)
        assert gray_code_rank(codes.long()).tolist() == list(range(2**k))


def test_one_partition_no_projection_is_query_sum_dot_document_mean(sets):
    config = FDEConfig(k_sim=0, d_proj=None, repetitions=1)
    vectors, mask = padded(sets)
    queries, documents = encode_queries(vectors, mask, config), encode_documents(vectors, mask, config)
    sums = torch.stack([s.sum(0) for s in sets])
    means = torch.stack([s.mean(0) for s in sets])
    torch.testing.assert_close(queries, sums, atol=1e-6, rtol=0)
    torch.testing.assert_close(documents, means, atol=1e-6, rtol=0)
    torch.testing.assert_close(queries @ documents.T, sums @ means.T, atol=1e-5, rtol=0)


def test_empty_partition_takes_the_hamming_nearest_document_vector():
    # hyperplanes = the coordinate axes, so a vector's bits are the signs of its coordinates
    config = FDEConfig(k_sim=3, d_proj=None, repetitions=1)
    randomness = FDERandomness(torch.eye(3)[None], None, None, None)
    a = torch.tensor([1.0, 2.0, 3.0])  # bits 111 -> rank 5
    b = torch.tensor([-1.0, -2.0, 0.5])  # bits 001 -> rank 1
    c = torch.tensor([2.0, 1.0, 1.0])  # bits 111 -> rank 5, shares a's partition
    doc = encode(torch.stack([a, b, c])[None], None, config, is_query=False, randomness=randomness).view(8, 3)
    # partition bits by rank: 000 001 011 010 110 111 101 100; Hamming distances (a, b) and the pick, ties going to
    # the first vector of the set (a; c has a's bits but comes later)
    expected = {
        0: b,  # 000: (3, 1)
        1: b,  # b's own partition
        2: a,  # 011: (1, 1), a tie
        3: a,  # 010: (2, 2), a tie
        4: a,  # 110: (1, 3)
        5: (a + c) / 2,  # occupied by a and c: their average
        6: a,  # 101: (1, 1), a tie
        7: a,  # 100: (2, 2), a tie
    }
    for partition, vector in expected.items():
        torch.testing.assert_close(doc[partition], vector, msg=f"partition {partition}")
    # queries are never filled
    query = encode(torch.stack([a, b])[None], None, config, is_query=True, randomness=randomness).view(8, 3)
    assert query[[0, 2, 3, 4, 6, 7]].abs().sum() == 0
    torch.testing.assert_close(query[5], a)
    torch.testing.assert_close(query[1], b)


def test_fill_prefers_the_strictly_nearest_vector():
    config = FDEConfig(k_sim=3, d_proj=None, repetitions=1)
    randomness = FDERandomness(torch.eye(3)[None], None, None, None)
    first = torch.tensor([1.0, 1.0, 1.0])  # 111, rank 5
    second = torch.tensor([-1.0, -1.0, -1.0])  # 000, rank 0
    doc = encode(torch.stack([first, second])[None], None, config, is_query=False, randomness=randomness).view(8, 3)
    codes = partition_bits(3)
    for partition in range(8):
        ones = int(codes[partition].sum())
        if ones in (0, 3):
            continue  # occupied
        nearest = first if ones >= 2 else second
        torch.testing.assert_close(doc[partition], nearest, msg=f"partition {partition}")


def distinct_partition_set(config: FDEConfig, count: int, dim: int, seed: int) -> torch.Tensor:
    """`count` unit vectors that fall in pairwise different partitions in every repetition (rejection sampling)."""
    randomness = fde_randomness(config, dim)
    generator = torch.Generator().manual_seed(seed)
    chosen: list[torch.Tensor] = []
    used = [set() for _ in range(config.repetitions)]
    while len(chosen) < count:
        x = F.normalize(torch.randn(dim, generator=generator), dim=0)
        ranks = gray_code_rank(torch.einsum("d,rdk->rk", x, randomness.hyperplanes) > 0).tolist()
        if all(r not in seen for r, seen in zip(ranks, used, strict=True)):
            chosen.append(x)
            for r, seen in zip(ranks, used, strict=True):
                seen.add(r)
    return torch.stack(chosen)


def test_fde_equals_chamfer_when_partitions_hold_at_most_one_document_vector():
    config = FDEConfig(k_sim=5, d_proj=None, repetitions=3, seed=4)
    doc = distinct_partition_set(config, 6, dim=8, seed=0)  # [6, 8] unit vectors, one per partition
    # each query vector is a positive multiple of a document vector: same bits, and that vector is its argmax
    query = torch.stack([2.0 * doc[0], 0.5 * doc[3], doc[5], 1.5 * doc[3]])
    ones = torch.ones
    chamfer = maxsim(query[None], ones(1, 4), doc[None], ones(1, 6))[0, 0]
    fde_dot = encode_queries(query[None], None, config) @ encode_documents(doc[None], None, config).T
    torch.testing.assert_close(fde_dot[0, 0], config.repetitions * chamfer, atol=1e-5, rtol=0)
    torch.testing.assert_close(chamfer, torch.tensor(2.0 + 0.5 + 1.0 + 1.5))


def test_without_projections_the_fde_never_exceeds_chamfer(sets):
    # every query vector meets a convex combination of document vectors (or one of them): <= its max similarity
    config = FDEConfig(k_sim=3, d_proj=None, repetitions=4, seed=2)
    vectors, mask = padded(sets)
    estimate = encode_queries(vectors, mask, config) @ encode_documents(vectors, mask, config).T / config.repetitions
    chamfer = maxsim(vectors, mask, vectors, mask)
    assert (estimate <= chamfer + 1e-5).all()


def test_projections_have_the_documented_form():
    ams = fde_randomness(FDEConfig(k_sim=2, d_proj=5, repetitions=3, projection="ams"), 7).projection
    assert ams.shape == (3, 7, 5)
    assert ((ams != 0).sum(-1) == 1).all() and set(ams.unique().tolist()) <= {-1.0, 0.0, 1.0}
    dense = fde_randomness(FDEConfig(k_sim=2, d_proj=4, repetitions=2, projection="rademacher"), 7).projection
    torch.testing.assert_close(dense.abs(), torch.full((2, 7, 4), 0.5))


def test_projected_inner_products_are_unbiased():
    # E[<Sx, Sy>] = <x, y> for both sketches: average the one-partition FDE dot product over many seeds
    x, y = torch.tensor([[[1.0, 2.0, -1.0, 0.5]]]), torch.tensor([[[0.5, 1.0, 2.0, -1.0]]])
    for projection in ("ams", "rademacher"):
        dots = [
            float(encode_queries(x, None, c) @ encode_documents(y, None, c).T)
            for c in (FDEConfig(0, 3, 1, None, seed, True, projection) for seed in range(400))
        ]
        assert abs(sum(dots) / len(dots) - float(x.flatten() @ y.flatten())) < 0.25, projection


def test_final_count_sketch_equals_its_matrix():
    config = FDEConfig(k_sim=2, d_proj=3, repetitions=2, final_dim=10, seed=5)
    raw_config = FDEConfig(k_sim=2, d_proj=3, repetitions=2, final_dim=None, seed=5)
    randomness = fde_randomness(config, 6)
    x = torch.randn(4, 5, 6)
    raw = encode(x, None, raw_config, is_query=False, randomness=randomness)
    matrix = torch.zeros(raw.shape[1], 10)
    matrix[torch.arange(raw.shape[1]), randomness.sketch_bucket] = randomness.sketch_sign
    torch.testing.assert_close(encode_documents(x, None, config), raw @ matrix, atol=1e-5, rtol=1e-5)


def test_deterministic_from_the_seed_and_padding_invariant(sets):
    config = FDEConfig(k_sim=3, d_proj=4, repetitions=3, seed=11)
    vectors, mask = padded(sets)
    first = encode_documents(vectors, mask, config)
    fde_randomness.cache_clear()
    assert torch.equal(first, encode_documents(vectors, mask, config))
    assert not torch.equal(first, encode_documents(vectors, mask, FDEConfig(k_sim=3, d_proj=4, repetitions=3, seed=12)))
    longer = torch.cat([vectors, torch.randn(len(sets), 4, 6)], 1)
    longer_mask = torch.cat([mask, torch.zeros(len(sets), 4, dtype=torch.bool)], 1)
    torch.testing.assert_close(encode_documents(longer, longer_mask, config), first)
    alone = encode_documents(sets[3][None], None, config)
    torch.testing.assert_close(alone[0], first[3])


def test_an_empty_set_encodes_to_zero():
    vectors, mask = torch.randn(2, 3, 4), torch.tensor([[True, True, False], [False, False, False]])
    for encoder in (encode_queries, encode_documents):
        out = encoder(vectors, mask, FDEConfig(k_sim=2, d_proj=None, repetitions=2))
        assert out[1].abs().sum() == 0 and out[0].abs().sum() > 0


def test_dimensions():
    config = FDEConfig(k_sim=4, d_proj=8, repetitions=5)
    assert config.output_dim(128) == 5 * 16 * 8
    assert FDEConfig(k_sim=4, d_proj=None, repetitions=5).output_dim(128) == 5 * 16 * 128
    assert FDEConfig(k_sim=4, d_proj=8, repetitions=5, final_dim=100).output_dim(128) == 100
    assert encode_queries(torch.zeros(0, 3, 128), None, config).shape == (0, 640)


@pytest.mark.parametrize(
    "settings",
    [
        dict(k_sim=-1),
        dict(k_sim=40),
        dict(d_proj=0),
        dict(repetitions=0),
        dict(final_dim=0),
        dict(projection="gaussian"),
    ],
)
def test_bad_configs_are_config_errors(settings):
    with pytest.raises(ConfigError):
        FDEConfig(**settings)


def test_bad_shapes_are_config_errors():
    config = FDEConfig()
    with pytest.raises(ConfigError, match=r"\[B, L, D\]"):
        encode_queries(torch.zeros(3, 4), None, config)
    with pytest.raises(ConfigError, match="mask"):
        encode_documents(torch.zeros(2, 3, 4), torch.ones(2, 4), config)
