"""Our CIF and Paraformer parts against FunASR's (`funasr.models.paraformer.cif_predictor`, `funasr.models.sanm`).

On identical alphas and hidden states our closed-form `cif` equals FunASR's frame loop `cif` and its vectorised
`cif_v1` (the one `CifPredictorV2` calls): embeddings, firing counts, the integrate trace (FunASR's `fires`) and,
against the loop, the gradients. With copied weights our `CIFPredictor` equals `CifPredictorV2` at inference (with
the 0.45 tail) and in training (weights scaled to the target length), and H3's SAN-M encoder equals FunASR's
`SANMEncoder` (input_layer "pe"), through the encoder/predictor port of `benchmarks/perf/paraformer_vs_funasr.py`.
Where the two differ by design (FunASR's loop fires at most once per frame; in training it may drop the last token
to float rounding, ours always fires N), the tests pin the difference instead of hiding it.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from paperzoo.speech.paraformer.cif import CIFPredictor, add_tail, cif

pytestmark = pytest.mark.peers
cif_predictor = pytest.importorskip("funasr.models.paraformer.cif_predictor")

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "perf" / "paraformer_vs_funasr.py"


def benchmark_module():
    spec = importlib.util.spec_from_file_location("paraformer_vs_funasr", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_case(batch: int, frames: int, dim: int, seed: int, scale: float = 0.9):
    """hidden [B, T, D], alphas [B, T] in [0, scale) with zeros past each length, lengths [B] (the first is T)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, frames, dim, generator=g)
    lengths = torch.randint(max(frames // 2, 1), frames + 1, (batch,), generator=g)
    lengths[0] = frames
    alphas = torch.rand(batch, frames, generator=g) * scale
    alphas = alphas * (torch.arange(frames)[None, :] < lengths[:, None])
    return hidden, alphas, lengths


def assert_same_firing(ours, embeddings: torch.Tensor, fires: torch.Tensor, atol: float = 1e-5) -> None:
    """Our `Fired` against FunASR's (embeddings [B, N', D] padded to round(sum alpha), fires [B, T])."""
    counts = (fires >= 1.0).sum(1)  # both mark a firing frame by integrate >= threshold (cif_v1: 1 + remainder)
    assert ours.lengths.tolist() == counts.tolist()
    width = ours.embeddings.shape[1]
    assert embeddings.shape[1] >= width
    torch.testing.assert_close(ours.embeddings, embeddings[:, :width], atol=atol, rtol=1e-5)
    assert embeddings[:, width:].abs().sum() == 0  # FunASR's extra rows (round instead of floor) are zero
    torch.testing.assert_close(ours.integrate, fires, atol=atol, rtol=1e-5)


@pytest.mark.parametrize(
    ("batch", "frames", "dim", "seed"), [(1, 1, 3, 0), (2, 9, 4, 1), (4, 57, 16, 2), (3, 300, 8, 3)]
)
def test_cif_equals_funasr_cif_and_cif_v1(batch, frames, dim, seed):
    hidden, alphas, _ = random_case(batch, frames, dim, seed)
    ours = cif(hidden, alphas, 1.0)
    # FunASR accumulates each embedding in float32 (the loop a running frame, cif_v1 differences of a prefix sum of
    # alpha * h), so over hundreds of frames its rounding reaches ~2e-5; ours sums each embedding's own frames.
    atol = 1e-5 if frames < 100 else 1e-4
    assert_same_firing(ours, *cif_predictor.cif(hidden, alphas, 1.0), atol=atol)
    assert_same_firing(ours, *cif_predictor.cif_v1(hidden, alphas, 1.0), atol=atol)


def test_cif_hand_case_with_carry_over_and_exact_threshold():
    # cumulative 0.3 0.8 1.2 1.9 2.4 2.7 (carry-over 0.2 and 0.4), and 0.5 0.25 0.25 | 0.75 0.25: sums that hit 1.0
    # exactly (all binary fractions) fire on that frame in all three implementations.
    alphas = torch.tensor([[0.3, 0.5, 0.4, 0.7, 0.5, 0.3], [0.5, 0.25, 0.25, 0.75, 0.25, 0.0]])
    hidden = torch.eye(6).expand(2, 6, 6).contiguous()  # embedding row k = the weight of each frame in token k
    ours = cif(hidden, alphas, 1.0)
    assert ours.lengths.tolist() == [2, 2]
    expected = torch.tensor(
        [
            [[0.3, 0.5, 0.2, 0.0, 0.0, 0.0], [0.0, 0.0, 0.2, 0.7, 0.1, 0.0]],
            [[0.5, 0.25, 0.25, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.75, 0.25, 0.0]],
        ]
    )
    torch.testing.assert_close(ours.embeddings, expected)
    for embeddings, fires in (cif_predictor.cif(hidden, alphas, 1.0), cif_predictor.cif_v1(hidden, alphas, 1.0)):
        assert_same_firing(ours, embeddings, fires)


def test_cif_gradients_equal_funasr_loop():
    hidden, alphas, _ = random_case(3, 40, 6, seed=4)
    weights = torch.randn(3, 40, 6, generator=torch.Generator().manual_seed(5))
    grads = []
    for run in (lambda h, a: cif(h, a, 1.0).embeddings, lambda h, a: cif_predictor.cif(h, a, 1.0)[0]):
        h, a = hidden.clone().requires_grad_(), alphas.clone().requires_grad_()
        out = run(h, a)
        (out * weights[:, : out.shape[1]]).sum().backward()
        grads.append((h.grad, a.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-5, rtol=1e-5)


def test_weights_above_threshold_are_a_documented_difference():
    # One frame of weight 2.5 holds two and a half tokens. Ours fires twice on it and carries 0.5: tokens h0, h0,
    # 0.5 h0 + 0.2 h1 + 0.3 h2. FunASR's loop fires once per frame and carries 1.5, so the next frame fires with a
    # negative share (1 - 1.5): tokens h0, 1.5 h0 - 0.5 h1, 0.7 h1 + 0.3 h2. Same count, different embeddings: this pins
    # the deviation `cif`'s docstring states (weights > 1 only arise from training-time scaling).
    hidden = torch.eye(3)[None]
    alphas = torch.tensor([[2.5, 0.2, 0.3]])
    ours = cif(hidden, alphas, 1.0)
    assert ours.lengths.tolist() == [3]
    torch.testing.assert_close(ours.embeddings[0], torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0.5, 0.2, 0.3]]))
    theirs, fires = cif_predictor.cif(hidden, alphas, 1.0)
    torch.testing.assert_close(fires[0], torch.tensor([2.5, 1.7, 1.0]))
    torch.testing.assert_close(theirs[0], torch.tensor([[1.0, 0, 0], [1.5, -0.5, 0], [0, 0.7, 0.3]]))


def copied_predictors(dim: int, tail_threshold: float, seed: int):
    torch.manual_seed(seed)
    ours = CIFPredictor(dim, 1, 1, tail_threshold=tail_threshold)
    with torch.no_grad():  # a larger bias spreads alpha over (0, 1) instead of around 0.5
        ours.output.bias.fill_(0.3)
    theirs = cif_predictor.CifPredictorV2(dim, 1, 1, tail_threshold=tail_threshold)
    theirs.cif_conv1d.load_state_dict(ours.conv.state_dict())
    theirs.cif_output.load_state_dict(ours.output.state_dict())
    return ours, theirs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_predictor_inference_with_tail_equals_cif_predictor_v2(seed):
    ours, theirs = copied_predictors(16, 0.45, seed)
    hidden, _, lengths = random_case(5, 61, 16, seed)
    mask = (torch.arange(61)[None, :] < lengths[:, None])[:, None, :]  # [B, 1, T] as Paraformer.calc_predictor
    with torch.no_grad():
        out = ours.eval()(hidden, lengths)
        embeddings, token_num, alphas, fires = theirs.eval()(hidden, None, mask)
    assert out.lengths.tolist() == token_num.long().tolist()
    width = out.embeddings.shape[1]
    assert embeddings.shape[1] == width  # FunASR cuts to max(floor(sum alpha)) as well
    torch.testing.assert_close(out.embeddings, embeddings, atol=1e-5, rtol=1e-5)
    # FunASR's alphas carry the tail frame (0.45 at index length, one column more); ours are the predictor's own.
    torch.testing.assert_close(out.alphas, alphas[:, :61] * mask[:, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(alphas[torch.arange(5), lengths], torch.full((5,), 0.45))
    torch.testing.assert_close(out.quantity + 0.45, alphas.sum(1), atol=1e-5, rtol=1e-5)


def test_tail_equals_funasr_tail_process_fn():
    # Residual 0.7 + 0.45 fires a last token, 0.5 + 0.45 does not; the tail goes at index length, not at the end.
    alphas = torch.tensor([[0.3, 0.5, 0.4, 0.7, 0.5, 0.3], [0.6, 0.6, 0.2, 0.1, 0.0, 0.0]])
    lengths = torch.tensor([6, 4])
    hidden = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(6)[None, :] < lengths[:, None]).float()
    predictor = cif_predictor.CifPredictorV2(5, 1, 1, tail_threshold=0.45)
    their_hidden, their_alphas, token_num = predictor.tail_process_fn(hidden, alphas, alphas.sum(-1), mask=mask)
    our_hidden, our_alphas = add_tail(hidden, alphas, lengths, 0.45)
    torch.testing.assert_close(our_hidden, their_hidden)
    torch.testing.assert_close(our_alphas, their_alphas)
    ours = cif(our_hidden, our_alphas, 1.0)
    assert ours.lengths.tolist() == token_num.long().tolist() == [3, 1]
    assert_same_firing(ours, *cif_predictor.cif_v1(their_hidden, their_alphas, 1.0))


@pytest.mark.parametrize("seed", [0, 1])
def test_predictor_training_scaling_equals_cif_predictor_v2(seed):
    ours, theirs = copied_predictors(16, 0.45, seed)
    hidden, _, lengths = random_case(6, 48, 16, seed)
    targets = torch.tensor([20, 3, 17, 1, 9, 24])
    labels = torch.where(torch.arange(24)[None, :] < targets[:, None], 5, -1)  # [B, N] IGNORE_ID-padded
    mask = (torch.arange(48)[None, :] < lengths[:, None])[:, None, :]
    out = ours.train()(hidden, lengths, targets)
    embeddings, token_num, alphas, fires = theirs.train()(hidden, labels, mask, ignore_id=-1)
    torch.testing.assert_close(out.quantity, token_num, atol=1e-5, rtol=1e-5)  # the unscaled sum, for the MAE loss
    torch.testing.assert_close(out.alphas, alphas, atol=1e-6, rtol=1e-5)  # scaled to sum to N
    torch.testing.assert_close(alphas.sum(1), targets.float(), atol=1e-4, rtol=1e-5)
    assert out.lengths.tolist() == targets.tolist()
    # FunASR fires floor of the float32 prefix sum: when the scaled weights end a rounding error below N it drops the
    # last token (its row stays zero). Ours always fires exactly N; every token FunASR does fire is equal.
    fired = (fires >= 1.0).sum(1)
    assert ((fired == targets) | (fired == targets - 1)).all()
    width = int(targets.max())
    for b in range(6):
        n = int(fired[b])
        torch.testing.assert_close(out.embeddings[b, :n], embeddings[b, :n], atol=1e-4, rtol=1e-4)
        if n < targets[b]:  # the dropped token: FunASR leaves zeros, ours holds (almost) a full threshold of weight
            assert embeddings[b, n:width].abs().sum() == 0 and out.embeddings[b, n].abs().sum() > 0
    # the gradient of a loss on the fired embeddings reaches the predictor's weights in both
    (out.embeddings.sum() + out.quantity.sum()).backward()
    (embeddings.sum() + token_num.sum()).backward()
    assert ours.conv.weight.grad is not None and theirs.cif_conv1d.weight.grad is not None


@pytest.mark.parametrize("layers", [1, 3])
def test_sanm_encoder_and_predictor_equal_funasr_through_the_benchmark_port(layers):
    bench = benchmark_module()
    args = bench.parse_args(
        ["--d-model", "32", "--num-heads", "4", "--ffn-dim", "64", "--encoder-layers", str(layers)]
        + ["--decoder-layers", "1", "--vocab-size", "20", "--input-dim", "40"]
    )
    config = bench.model_config(args)
    torch.manual_seed(0)
    ours = bench.build_ours(config).eval()
    theirs = bench.build_funasr(config).eval()
    with torch.no_grad():  # move every parameter off its init (LayerNorm ones, zero biases), so each name must map
        for p in ours.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    bench.port_encoder_predictor(ours, theirs)
    for module in theirs.encoder.modules():  # FunASR's LayerNorm eps is 1e-12, ours torch's 1e-5
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-5
    features, lengths, _, _ = bench.make_batch(config, 3, 23, 0.5, seed=1)  # lengths 23, 17, 11
    valid = (torch.arange(23)[None, :] < lengths[:, None])[..., None]  # [B, T, 1]
    with torch.no_grad():
        memory, memory_lengths = ours.encoder(features, lengths)
        encoded, encoded_lengths = theirs.encode(features, lengths)
        torch.testing.assert_close(memory, encoded * valid, atol=1e-4, rtol=1e-4)  # FunASR leaves padded frames
        assert memory_lengths.tolist() == encoded_lengths.tolist()
        predicted = ours.predictor(memory, memory_lengths)
        # On the same (padding-zeroed) encoder output the predictors agree, tail included.
        embeddings, token_num, _, _ = theirs.calc_predictor(encoded * valid, encoded_lengths)
        assert predicted.lengths.tolist() == token_num.long().tolist()
        torch.testing.assert_close(predicted.embeddings, embeddings, atol=1e-4, rtol=1e-4)
        # FunASR's own pipeline feeds CifPredictorV2 the unmasked encoder output, whose padded frames are not zero:
        # the conv's right context gives the last real frame of a padded utterance a different alpha, and the tail
        # frame (placed at index length, FunASR appends its zero frame at the end of the batch) integrates a padded
        # frame. Its batched result then differs from the same utterance decoded alone; ours does not.
        batched, _, _, _ = theirs.calc_predictor(encoded, encoded_lengths)
        alone, _, _, _ = theirs.calc_predictor(*theirs.encode(features[2:, :11], lengths[2:]))
        ours_alone = ours.predictor(*ours.encoder(features[2:, :11], lengths[2:])).embeddings
    torch.testing.assert_close(batched[0], embeddings[0], atol=1e-4, rtol=1e-4)  # the unpadded utterance
    torch.testing.assert_close(alone[0], embeddings[2, : alone.shape[1]], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours_alone[0], predicted.embeddings[2, : ours_alone.shape[1]], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batched[2], embeddings[2], atol=1e-3)
