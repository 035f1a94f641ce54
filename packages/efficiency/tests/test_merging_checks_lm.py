"""The DARE and ComPEFT claim checks: their building blocks on hand-made state dicts (default tier) and the quick
checks on the quick text testbed (`slow`)."""

import math
import struct
from pathlib import Path

import pytest
import torch

from paperzoo.core.checks import ClaimResult
from paperzoo.efficiency.merging.checks import compeft as compeft_check
from paperzoo.efficiency.merging.checks import dare as dare_check
from paperzoo.efficiency.merging.compeft import compeft_compress


def _pair(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(10, 4, generator=g)
    base = {"embed.weight": embed, "blocks.0.w": torch.randn(6, 4, generator=g), "head.weight": embed.clone()}
    tuned_embed = embed + 0.1 * torch.randn(10, 4, generator=g)
    expert = {
        "embed.weight": tuned_embed,
        "blocks.0.w": base["blocks.0.w"] + 0.1 * torch.randn(6, 4, generator=g),
        "head.weight": tuned_embed.clone(),
    }
    return base, expert


def test_drop_variants_share_one_mask_and_rescale() -> None:
    base, expert = _pair()
    p = 0.5
    out = dare_check.drop_variants(base, expert, p, seed=3)
    for name in base:
        delta = expert[name] - base[name]
        kept = (out["dare"][name] - base[name]).abs() > 1e-7
        assert 0 < kept.float().mean() < 1
        torch.testing.assert_close(out["dare"][name], base[name] + delta * kept / (1 - p))
        torch.testing.assert_close(out["no_rescale"][name], base[name] + delta * kept)
        # the raw-weight drop draws the same mask (same seed, model index and name) on theta_ft itself
        torch.testing.assert_close(out["raw"][name], expert[name] * kept / (1 - p))


def test_relative_delta_norm() -> None:
    base = {"a": torch.tensor([3.0, 4.0]), "n": torch.tensor([1])}
    expert = {"a": torch.tensor([3.0, 4.5]), "n": torch.tensor([2])}
    assert dare_check.relative_delta_norm(base, expert) == pytest.approx(0.5 / 5.0)


def test_compressed_state_follows_the_tied_embedding() -> None:
    base, expert = _pair()
    compressed = compeft_compress(base, expert, density=0.25, alpha=2.0, exclude=("head.weight",))
    assert set(compressed.tensors) == {"embed.weight", "blocks.0.w"}
    state = compeft_check.compressed_state(base, compressed)
    assert torch.equal(state["head.weight"], state["embed.weight"])
    assert not torch.equal(state["embed.weight"], base["embed.weight"])


def test_quantized_state_bytes_and_values() -> None:
    base, expert = _pair()
    state, size = compeft_check.quantized_state(base, expert, 4)
    # head.weight is a tied copy: stored once; codes packed at 4 bits plus one float32 scale per tensor
    assert size == (40 * 4 + 7) // 8 + 4 + (24 * 4 + 7) // 8 + 4
    delta = expert["blocks.0.w"] - base["blocks.0.w"]
    step = float(delta.abs().max()) / 7
    assert (state["blocks.0.w"] - expert["blocks.0.w"]).abs().max() <= step / 2 + 1e-6
    assert torch.equal(state["head.weight"], state["embed.weight"])


def test_dense_file_bytes_is_header_plus_payload(tmp_path: Path) -> None:
    base, expert = _pair()
    for dtype, width in ((torch.float32, 4), (torch.float16, 2)):
        size = compeft_check.dense_file_bytes(base, expert, dtype, tmp_path)
        path = next(p for p in tmp_path.iterdir() if str(dtype).split(".")[1] in p.name)
        (header,) = struct.unpack("<Q", path.read_bytes()[:8])
        assert size == path.stat().st_size == 8 + header + (40 + 24) * width


def test_best_ratio_picks_the_most_compressed_qualifying_k() -> None:
    rows = {
        "a": {"compeft k=0.05 gain": 0.90, "compeft k=0.05 ratio fp32": 40.0, "compeft k=0.1 gain": 0.97,
              "compeft k=0.1 ratio fp32": 20.0, "compeft k=0.2 gain": 0.99, "compeft k=0.2 ratio fp32": 11.0},
        "b": {"compeft k=0.05 gain": 0.99, "compeft k=0.05 ratio fp32": 41.0, "compeft k=0.1 gain": 0.96,
              "compeft k=0.1 ratio fp32": 19.0, "compeft k=0.2 gain": 0.99, "compeft k=0.2 ratio fp32": 12.0},
    }  # fmt: skip
    assert compeft_check.best_ratio(rows, (0.05, 0.1, 0.2)) == (19.0, 0.1)
    rows["a"]["compeft k=0.1 gain"] = rows["a"]["compeft k=0.2 gain"] = 0.5
    assert compeft_check.best_ratio(rows, (0.05, 0.1, 0.2)) == (0.0, None)
    assert math.isclose(compeft_check.KEEP_GAIN, 0.95)


@pytest.mark.slow
@pytest.mark.parametrize("module", [dare_check, compeft_check], ids=["dare", "compeft"])
def test_quick_check_runs(module) -> None:  # noqa: ANN001 - a module
    result = module.check(quick=True)
    assert isinstance(result, ClaimResult) and result.quick
    assert result.criteria and all(math.isfinite(c.measured) for c in result.criteria)
    assert result.method and result.baselines
