"""Every method in METHODS: inputs untouched, strided and mixed-dtype inputs, excluded keys, self-merge, merge_iter."""

import pytest
import torch

from paperzoo.core.testing.conformance import check_no_mutation
from paperzoo.efficiency.merging.procedure import METHODS, merge, merge_iter

# Parameters under which merging a model with itself (K = 1 or 2 copies) must return it: no trimming or dropping,
# weights that sum to 1 where the method sums rather than averages. PCB keeps every entry above its minimum score
# with ratio 1; the minimum sits at the entries whose delta is 0 (beta = 0), which merge to 0 anyway.
IDENTITY: dict[str, dict] = {
    "average": {},
    "task_arithmetic": {"sum_to_one": True},
    "ties": {"density": 1.0},
    "dare_task_arithmetic": {"drop_rate": 0.0, "sum_to_one": True},
    "dare_ties": {"drop_rate": 0.0},
    "pcb": {"ratio": 1.0, "clip": 0.0},
}


@pytest.fixture(autouse=True)
def one_thread():  # noqa: ANN201 - a generator fixture
    """Small tensors: one intra-op thread (two spinning threads on the shared 2-core machine were ~500x slower).

    Set here rather than with paperzoo.core.checks.torch_threads, whose import (Lightning) takes ~15 s.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _models(seed: int, count: int = 3) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A base and fine-tuned models with values exactly representable in bf16 (so every dtype holds them exactly)."""
    g = torch.Generator().manual_seed(seed)

    def exact(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.bfloat16).float()

    base = {
        "encoder.weight": exact(torch.randn(12, 9, generator=g)),
        "encoder.bias": exact(torch.randn(12, generator=g)),
        "classifier.weight": exact(torch.randn(4, 12, generator=g)),
        "logit_scale": exact(torch.randn((), generator=g)),  # a 0-dim parameter
        "position_ids": torch.arange(5),
    }
    models = []
    for _ in range(count):
        model = {}
        for name, tensor in base.items():
            if tensor.is_floating_point():
                delta = exact(torch.randn(tensor.shape, generator=g) * 0.5)
                if delta.dim():  # some untouched entries, as fine-tuning leaves (and PCB's minimum score sits at)
                    delta[..., 0] = 0.0
                model[name] = exact(tensor + delta)
            else:
                model[name] = tensor + 1
        models.append(model)
    return base, models


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_mutation_excluded_keys_and_merge_iter(method: str) -> None:
    base, models = _models(0)
    out = check_no_mutation(merge, base=base, models=models, method=method, exclude=["classifier.*"], seed=3)
    assert list(out) == list(base)
    for name in ("classifier.weight", "position_ids"):  # excluded, and an integer buffer: copies of the base
        assert torch.equal(out[name], base[name]) and out[name].dtype == base[name].dtype
        assert out[name].data_ptr() != base[name].data_ptr()
    assert not torch.equal(out["encoder.weight"], base["encoder.weight"])
    assert all(torch.isfinite(t).all() for t in out.values() if t.is_floating_point())
    streamed = list(merge_iter(base, models, method, exclude=["classifier.*"], seed=3))
    assert [name for name, _ in streamed] == list(out)
    for name, tensor in streamed:
        assert torch.equal(tensor, out[name]), f"{method}: merge_iter differs from merge on {name}"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_strided_and_mixed_dtype_inputs_equal_contiguous_float32(method: str) -> None:
    base, models = _models(1)
    reference = merge(base, models, method, seed=5)
    mixed_base = {n: t.t().contiguous().t() if t.dim() == 2 else t for n, t in base.items()}  # column-major
    dtypes = (torch.float16, torch.bfloat16, torch.float32)
    mixed_models = []
    for model, dtype in zip(models, dtypes, strict=True):
        mixed = {}
        for name, tensor in model.items():
            if not tensor.is_floating_point():
                mixed[name] = tensor
            elif dtype == torch.float32:  # every other element of a wider tensor
                mixed[name] = torch.stack([torch.zeros_like(tensor), tensor], dim=-1)[..., 1]
            else:
                mixed[name] = tensor.to(dtype)
        mixed_models.append(mixed)
    assert not mixed_base["encoder.weight"].is_contiguous() and not mixed_models[2]["encoder.bias"].is_contiguous()
    out = merge(mixed_base, mixed_models, method, seed=5)
    for name, tensor in reference.items():
        assert out[name].dtype == base[name].dtype
        assert torch.equal(out[name], tensor), f"{method}: strided/mixed-dtype inputs change {name}"
    # a half-precision base gives a half-precision merge
    half = {n: t.half() if t.is_floating_point() else t for n, t in base.items()}
    assert merge(half, mixed_models, method, seed=5)["encoder.weight"].dtype == torch.float16


def test_identity_table_covers_every_method() -> None:
    assert set(IDENTITY) == set(METHODS), "add each new method's self-merge parameters to IDENTITY"


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("copies", [1, 2])
def test_merging_a_model_with_itself_returns_it(method: str, copies: int) -> None:
    base, (model, *_) = _models(2, count=1)
    params = dict(IDENTITY[method])
    weights = [1.0 / copies] * copies if params.pop("sum_to_one", False) else None
    out = merge(base, [model] * copies, method, weights=weights, **params)
    for name, tensor in model.items():
        torch.testing.assert_close(out[name], tensor if base[name].is_floating_point() else base[name])


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_chunked_combine_equals_one_whole_tensor_step(method: str, scope: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The engine merges each tensor in flat chunks of at most CHUNK entries (bounded temporaries); a chunk of 7
    # entries, which splits every tensor here unevenly, must give bit-identical tensors, with 6 models (K >= 5 is
    # where torch's own sum over K rows changes its order with the tensor's width).
    import paperzoo.efficiency.merging.procedure as procedure

    if scope == "tensor" and method != "ties":
        pytest.skip("scope is a TIES parameter")
    base, models = _models(5, count=6)
    params = {"scope": scope} if method == "ties" else {}
    whole = merge(base, models, method, seed=2, **params)
    monkeypatch.setattr(procedure, "CHUNK", 7)
    chunked = merge(base, models, method, seed=2, **params)
    for name, tensor in whole.items():
        assert torch.equal(chunked[name], tensor), f"{method}: chunked merge differs on {name}"
