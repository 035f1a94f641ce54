"""PCB-Merging: a hand-computed 2-task case, and the streamed per-tensor engine against a naive flattened reference."""

import math

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.merging import sparsify
from paperzoo.efficiency.merging.pcb import clip_ranks, cut_ranks
from paperzoo.efficiency.merging.procedure import merge, method_parameters


@pytest.fixture(autouse=True)
def one_thread():  # noqa: ANN201 - a generator fixture
    """Small tensors: one intra-op thread (two spinning threads on the shared 2-core machine were ~500x slower).

    Set here rather than with paperzoo.core.checks.torch_threads, whose import (Lightning) takes ~15 s.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_hand_computed_two_tasks() -> None:
    # One task vector split over two tensors (the statistics are over the whole vector), clip 0, ratio 0.75:
    #   tau1 = [2, -1 | 0, 1], tau2 = [1, 1 | -2, 0], sum = [3, 0, -2, 1]
    #   |tau1| in [0, 2] -> norm [1, .5, 0, .5] -> intra1 = exp(2 * norm^2) = [e^2, e^.5, 1, e^.5]
    #   inter1 = tanh(tau1 * sum) = [tanh 6, 0, 0, tanh 1]    -> beta1 = [e^2 tanh 6, 0, 0, e^.5 tanh 1]
    #   |tau2| in [0, 2] -> norm [.5, .5, 1, 0] -> intra2 = [e^.5, e^.5, e^2, 1]
    #   inter2 = tanh(tau2 * sum) = [tanh 3, 0, tanh 4, 0]    -> beta2 = [e^.5 tanh 3, 0, e^2 tanh 4, 0]
    # cut-off = sorted(beta)[int(4 * 0.25)] = 0 for both; scale = beta / max beta:
    #   scale1 = [1, 0, 0, s13], s13 = e^.5 tanh 1 / (e^2 tanh 6)
    #   scale2 = [s20, 0, 1, 0], s20 = e^.5 tanh 3 / (e^2 tanh 4)
    # merged = sum scale * tau / sum scale = [(2 + s20) / (1 + s20), 0 (nothing kept), -2, 1]
    base = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([-1.0, 0.5])}
    tau1, tau2 = torch.tensor([2.0, -1.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, -2.0, 0.0])
    models = [{"a": base["a"] + t[:2], "b": base["b"] + t[2:]} for t in (tau1, tau2)]
    s20 = math.exp(0.5) * math.tanh(3) / (math.exp(2) * math.tanh(4))
    merged = torch.tensor([(2 + s20) / (1 + s20), 0.0, -2.0, 1.0])
    for lam in (1.0, 0.5):
        out = merge(base, models, "pcb", ratio=0.75, clip=0.0, lambda_=lam)
        torch.testing.assert_close(torch.cat([out["a"], out["b"]]), torch.cat([base["a"], base["b"]]) + lam * merged)
    # ratio 0.5: the cut-off is sorted(beta)[2]: task 1 keeps entry 0 only (entry 3 sits at the cut), task 2 entry 2
    out = merge(base, models, "pcb", ratio=0.5, clip=0.0)
    torch.testing.assert_close(
        torch.cat([out["a"], out["b"]]), torch.cat([base["a"], base["b"]]) + torch.tensor([2.0, 0, -2, 0])
    )
    # per-task weights (the reference's lams) scale each task's contribution, not the denominator
    out = merge(base, models, "pcb", ratio=0.75, clip=0.0, weights=[2.0, 1.0])
    expected = torch.tensor([(4 + s20) / (1 + s20), 0.0, -2.0, 2.0])
    torch.testing.assert_close(torch.cat([out["a"], out["b"]]), torch.cat([base["a"], base["b"]]) + expected)


def _naive_pcb(base, models, ratios, clip, lam, weights):  # noqa: ANN001, ANN202 - the reference's flattened math
    """pcb-merging.py's PCB_merge on the flattened (K, d) matrix, sorting for the clamps, then un-flattened."""
    names = [n for n, t in base.items() if t.is_floating_point()]
    tv = torch.stack([torch.cat([(m[n].float() - base[n].float()).reshape(-1) for n in names]) for m in models])
    n, d = tv.shape
    ordered, _ = torch.sort(tv.abs(), dim=1)
    low, high = ordered[:, int(d * clip)].unsqueeze(1), ordered[:, int(d * (1 - clip) - 1)].unsqueeze(1)
    magnitude = torch.clamp(tv.abs(), low, high)
    clipped = torch.sign(tv) * magnitude
    mn, mx = magnitude.min(dim=1, keepdim=True).values, magnitude.max(dim=1, keepdim=True).values
    beta = torch.exp(n * ((magnitude - mn) / (mx - mn)) ** 2) * torch.tanh(tv * tv.sum(dim=0))
    ordered, _ = torch.sort(beta, dim=1)
    rows = []
    for i, ratio in enumerate(ratios):
        kept = torch.clamp(beta[i], ordered[i, int(d * (1 - ratio))], ordered[i, d - 1])
        rows.append((kept - kept.min()) / (kept.max() - kept.min()))
    scale = torch.stack(rows)
    w = torch.tensor(weights, dtype=torch.float32).unsqueeze(1)
    merged = torch.sum(clipped * w * scale, dim=0) / torch.clamp(torch.sum(scale, dim=0), min=1e-12)
    out, start = {}, 0
    for name in names:
        size = base[name].numel()
        out[name] = base[name].float() + lam * merged[start : start + size].reshape(base[name].shape)
        start += size
    return out


def _task(seed: int, tasks: int = 3, dtype: torch.dtype = torch.float32):  # noqa: ANN202
    g = torch.Generator().manual_seed(seed)
    base = {
        "layer.0.weight": torch.randn(40, 30, generator=g),
        "layer.0.bias": torch.randn(40, generator=g),
        "layer.1.weight": torch.randn(7, 40, generator=g),
        "steps": torch.arange(4),
    }
    models = [
        {
            n: (t + torch.randn(t.shape, generator=g) * 0.1 * (i + 1)).to(dtype) if t.is_floating_point() else t
            for n, t in base.items()
        }
        for i in range(tasks)
    ]
    return base, models


@pytest.mark.parametrize(
    ("ratios", "clip", "weights"), [((0.1, 0.1, 0.1), 1e-4, (1, 1, 1)), ((0.05, 0.3, 1.0), 0.01, (1.2, 0.8, 1.0))]
)
def test_streamed_equals_naive_flattened_reference(monkeypatch: pytest.MonkeyPatch, ratios, clip, weights) -> None:  # noqa: ANN001
    monkeypatch.setattr(sparsify, "_CHUNK", 97)  # many chunks per tensor: the selection's streaming is exercised
    base, models = _task(0)
    per_model = [{"ratio": r} for r in ratios]
    out = merge(base, models, "pcb", clip=clip, lambda_=0.7, weights=list(weights), model_params=per_model)
    expected = _naive_pcb(base, models, ratios, clip, 0.7, weights)
    for name, tensor in expected.items():
        torch.testing.assert_close(out[name], tensor, rtol=1e-5, atol=1e-6)
    assert torch.equal(out["steps"], base["steps"])
    # the default: ratio 0.1 for every task, clip 1e-4, lambda 1
    assert method_parameters("pcb") == {"ratio": 0.1, "clip": 1e-4, "lambda_": 1.0}
    default = merge(base, models, "pcb")
    for name, tensor in _naive_pcb(base, models, (0.1,) * 3, 1e-4, 1.0, (1, 1, 1)).items():
        torch.testing.assert_close(default[name], tensor, rtol=1e-5, atol=1e-6)


def test_half_precision_models_and_kept_fraction() -> None:
    base, models = _task(1, tasks=2, dtype=torch.bfloat16)
    out = merge(base, models, "pcb", ratio=0.2)
    expected = _naive_pcb(base, models, (0.2, 0.2), 1e-4, 1.0, (1, 1))
    for name, tensor in expected.items():
        torch.testing.assert_close(out[name], tensor, rtol=1e-5, atol=1e-6)
    # each task keeps ~ratio of its entries, so the merged delta is nonzero on at most ~2 * ratio of them
    nonzero = sum(int((out[n] != base[n]).sum()) for n in expected)
    total = sum(base[n].numel() for n in expected)
    assert 0.2 * total <= nonzero <= 0.4 * total + 2


def test_constant_magnitude_and_excluded_tensors() -> None:
    # a task vector of constant magnitude has hi == lo: the reference divides by zero (NaN); here intra = 1
    base = {"w": torch.zeros(6), "head": torch.zeros(2)}
    models = [
        {"w": torch.tensor([1.0, -1, 1, -1, 1, -1]), "head": torch.ones(2)},
        {"w": torch.ones(6), "head": -torch.ones(2)},
    ]
    out = merge(base, models, "pcb", ratio=1.0, clip=0.0, exclude=["head"])
    assert torch.isfinite(out["w"]).all()
    assert torch.equal(out["head"], base["head"])
    # where the tasks disagree the sum is 0 -> inter = tanh(0) = 0 -> dropped; where they agree both keep 1
    torch.testing.assert_close(out["w"], torch.tensor([1.0, 0, 1, 0, 1, 0]))
    # everything excluded: nothing to merge, the base comes back
    assert torch.equal(merge(base, models, "pcb", exclude=["*"])["w"], base["w"])


def test_reference_ranks_and_errors() -> None:
    # the reference clamps |tau| between sorted indices int(d * clip) and int(d * (1 - clip) - 1): for d < 1/clip
    # the top index is d - 2, i.e. the largest magnitude is clipped to the second largest
    assert clip_ranks(100, 1e-4) == [0, 98]
    assert clip_ranks(1_000_000, 1e-4) == [100, 999_899]
    assert clip_ranks(100, 0.0) == [0, 99]
    assert clip_ranks(1, 1e-4) == [0, 0]
    assert cut_ranks(100, 0.1) == [90, 99]
    assert clip_ranks(0, 0.1) == cut_ranks(0, 0.1) == []
    base = {"w": torch.zeros(2)}
    models = [{"w": torch.ones(2)}, {"w": -torch.ones(2)}]
    with pytest.raises(ConfigError, match="ratio=0.0 is out of range"):
        merge(base, models, "pcb", ratio=0.0)
    with pytest.raises(ConfigError, match=r"model_params\[1\]: ratio=1.5 is out of range"):
        merge(base, models, "pcb", model_params=[{}, {"ratio": 1.5}])
    with pytest.raises(ConfigError, match="clip=0.2 is out of range"):
        merge(base, models, "pcb", clip=0.2)
    with pytest.raises(ConfigError, match=r"model_params\[0\]: parameter 'clip'.*per-model parameters: ratio"):
        merge(base, models, "pcb", model_params=[{"clip": 0.0}, {}])
