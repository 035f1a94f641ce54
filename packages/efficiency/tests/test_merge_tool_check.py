"""The `merge` card's claim check and its measurement (`checks/merge_tool.py`), shared with the mergekit benchmark."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from paperzoo.efficiency.merging import io
from paperzoo.efficiency.merging.checks import merge_tool as mt


def test_llama_shapes_count_their_parameters():
    # hand count of FULL: per layer 4 x 768^2 (attention) + 3 x 768 x 2048 (MLP) + 2 x 768 (norms)
    per_layer = 4 * 768 * 768 + 3 * 768 * 2048 + 2 * 768
    assert mt.FULL.parameters == 12 * per_layer + 2 * 8192 * 768 + 768 == 97_536_768
    assert mt.FULL.largest == 8192 * 768  # the embedding and the head
    assert len(mt.TINY.tensors()) == 2 * 9 + 3
    assert all(n % 4 == 0 for s in mt.FULL.tensors().values() for n in [torch.Size(s).numel()])  # density 0.25 exact
    config = mt.FULL.config()
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is False


def test_write_experts_streams_deterministic_hf_directories(tmp_path):
    base, experts = mt.write_experts(tmp_path / "a", mt.TINY, 2)
    again, _ = mt.write_experts(tmp_path / "b", mt.TINY, 2)
    assert io.checkpoint_format(base) == "hf" and len(experts) == 2
    assert (base / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    layout = io.inspect(base)
    assert layout == {name: (shape, torch.float32) for name, shape in mt.TINY.tensors().items()}
    assert json.loads((experts[0] / "config.json").read_text()) == mt.TINY.config()
    b, e1, e2 = (load_file(p / "model.safetensors") for p in (base, *experts))
    for name in b:
        delta1, delta2 = e1[name] - b[name], e2[name] - b[name]
        assert 0 < delta1.abs().max() < 0.02 and not torch.equal(delta1, delta2), name  # small, distinct task vectors


def test_measure_reports_the_commands_peak_not_the_callers():
    held = torch.ones(100 << 20, dtype=torch.uint8)  # the caller holds 100 MiB, touched
    script = "import json; x = b'1' * (60 << 20); print('PAPERZOO_WORKER ' + json.dumps({'start_rss': 5, 'n': len(x)}))"
    measured = mt.measure([sys.executable, "-S", "-c", script])
    assert measured.report == {"start_rss": 5, "n": 60 << 20}
    assert measured.start_rss == 5 and measured.merge_peak_rss == 0
    assert 60 * mt.MIB <= measured.peak_rss < 100 * mt.MIB  # 60 MiB + a bare interpreter, none of the caller's
    del held
    with pytest.raises(RuntimeError, match="exited 3: boom"):
        mt.measure([sys.executable, "-S", "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])


def test_peak_rss_since_reset_sees_an_allocation_and_forgets_it():
    start = mt.reset_peak_rss()
    block = b"1" * (48 << 20)  # 48 MiB, every page written
    assert mt.peak_rss_since_reset() - start >= 48 * mt.MIB
    del block
    again = mt.reset_peak_rss()
    assert mt.peak_rss_since_reset() - again < 16 * mt.MIB


def test_bound_is_linear_in_k_and_the_largest_tensor():
    assert mt.bound(2, mt.MIB) == 12 * mt.MIB + 64 * mt.MIB
    assert mt.bound(6, 4 * mt.MIB) - mt.bound(4, 4 * mt.MIB) == 6 * 4 * mt.MIB


@pytest.mark.slow
def test_streamed_and_eager_workers_write_the_same_merge(tmp_path):
    base, experts = mt.write_experts(tmp_path / "models", mt.TINY, 3)
    outputs = {}
    for mode in ("streamed", "eager"):
        spec = mt.merge_spec(base, experts, tmp_path / f"{mode}.safetensors", "ties", {"density": 0.2})
        (tmp_path / f"{mode}.json").write_text(json.dumps(spec))
        measured = mt.measure(mt.worker_argv(mode, tmp_path / f"{mode}.json"))
        assert measured.merge_peak_rss >= measured.start_rss > 0 and measured.peak_rss >= measured.merge_peak_rss
        outputs[mode] = load_file(tmp_path / f"{mode}.safetensors")
    assert outputs["streamed"].keys() == outputs["eager"].keys()
    for name, tensor in outputs["eager"].items():
        assert torch.equal(outputs["streamed"][name], tensor), name


@pytest.mark.slow
def test_quick_check_runs_and_streaming_beats_eager_loading():
    """The verdict may fail (the bound, see the check's docstring); streaming below eager and equal outputs may not."""
    result = mt.check(quick=True)
    assert result.key == "merge" and len(result.criteria) == 4 * len(mt.COUNTS)
    for criterion in result.criteria:
        if "eager" in criterion.name or "max |" in criterion.name:
            assert criterion.passed, result.table()
