"""The merge tool: checkpoint io (inspect without loading, lazy reads, atomic safetensors) and config validation
before any weight loads (the command itself: test_merge_tool_cli.py)."""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.efficiency.merging import io
from paperzoo.efficiency.merging import run as run_module
from paperzoo.efficiency.merging.config import config_from_dict, load_config, validate
from paperzoo.efficiency.merging.run import run_merge

REPO = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures" / "merging"
TINY = REPO / "packages/efficiency/src/paperzoo/efficiency/merging/configs/tiny.yaml"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_fixtures = _fixture_module()
BASE = make_fixtures.base_state()
MODELS = {name: make_fixtures.fine_tune(BASE, seed) for name, seed in (("a", 1), ("b", 2), ("c", 3))}
PATHS = {
    "base": FIXTURES / "base.safetensors",
    "a": FIXTURES / "model_a.safetensors",
    "b": FIXTURES / "model_b.ckpt",
    "c": FIXTURES / "model_c",
}


def tiny_dict(tmp_path: Path) -> dict:
    values = yaml.safe_load(TINY.read_text())
    values["base"] = str(REPO / values["base"])
    for model in values["models"]:
        model["path"] = str(REPO / model["path"])
    values["output"] = str(tmp_path / "merged.safetensors")
    return values


# --- io ------------------------------------------------------------------------------------------------------------
def test_fixtures_are_small_and_regenerate_identically(tmp_path):
    total = sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file())
    assert total < 100_000, f"fixtures take {total} bytes"
    (tmp_path / "model_c").mkdir()
    make_fixtures.main(tmp_path)
    for name in ("base.safetensors", "model_a.safetensors", "model_c/model-00001-of-00002.safetensors"):
        assert (tmp_path / name).read_bytes() == (FIXTURES / name).read_bytes(), name


@pytest.mark.parametrize("name", ["base", "a", "b", "c"])
def test_inspect_and_lazy_reads_match_every_format(name):
    expected = BASE if name == "base" else MODELS[name]
    assert io.checkpoint_format(PATHS[name]) == {"base": "safetensors", "a": "safetensors", "b": "torch"}.get(
        name, "hf"
    )
    assert io.inspect(PATHS[name]) == {k: (tuple(t.shape), t.dtype) for k, t in expected.items()}
    lazy = io.LazyStateDict(PATHS[name])
    assert sorted(lazy) == sorted(expected) and len(lazy) == len(expected)
    for key, tensor in expected.items():
        assert torch.equal(lazy[key], tensor), key


def test_torch_files_are_memory_mapped_with_weights_only(monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    io.inspect(PATHS["b"])
    assert calls == [{"map_location": "cpu", "mmap": True, "weights_only": True}]


def test_legacy_and_plain_torch_files_and_bad_inputs(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save(BASE, legacy, _use_new_zipfile_serialization=False)
    assert io.inspect(legacy)["encoder.weight"] == ((16, 8), torch.float32)
    with pytest.raises(DataError, match=r"entry 'note' is a str, expected a tensor"):
        torch.save({**BASE, "note": "hi"}, tmp_path / "mixed.bin")
        io.inspect(tmp_path / "mixed.bin")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="broken.pt is truncated or corrupt"):
        io.inspect(tmp_path / "broken.pt")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(DataError, match="broken.safetensors is not a readable safetensors file"):
        io.inspect(tmp_path / "broken.safetensors")
    with pytest.raises(DataError, match=r"has suffix '.npz'; expected .safetensors, .pt"):
        (tmp_path / "w.npz").write_bytes(b"")
        io.inspect(tmp_path / "w.npz")
    with pytest.raises(DataError, match=r"nope.pt does not exist"):
        io.inspect(tmp_path / "nope.pt")
    with pytest.raises(DataError, match="is not a Hugging Face model"):
        io.inspect(tmp_path)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "gone.safetensors"}}))
    with pytest.raises(DataError, match="shard .*gone.safetensors listed in .* does not exist"):
        io.inspect(sharded)


def test_hf_directory_with_one_bin_file(tmp_path):
    torch.save(BASE, tmp_path / "pytorch_model.bin")
    assert io.checkpoint_format(tmp_path) == "hf"
    assert set(io.LazyStateDict(tmp_path)) == set(BASE)


def test_save_safetensors_round_trips_dtypes_strides_and_metadata(tmp_path):
    tensors = {
        "f32": torch.randn(3, 4),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 3).bfloat16(),
        "i64": torch.arange(6),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "strided": torch.randn(4, 6).t(),  # [6, 4], not contiguous
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "out" / "w.safetensors"
    written = io.save_safetensors(tensors, path, {"format": "pt", "card": "{}"})
    assert written == path.stat().st_size
    loaded = load_file(path)
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "card": "{}"}
    assert [p.name for p in path.parent.iterdir()] == ["w.safetensors"]


def test_save_safetensors_leaves_nothing_when_it_fails(tmp_path):
    class Exploding(dict):
        """Gives its tensors while the header is built, fails while their bytes are written."""

        def values(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_safetensors(Exploding(w=torch.ones(2)), tmp_path / "w.safetensors", {})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match=r"tensor 'c' has dtype torch.complex64"):
        io.save_safetensors({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "w.safetensors", {})


def test_sha256_of_a_directory_follows_its_shards(tmp_path):
    assert io.sha256(PATHS["a"]) == hashlib.sha256(PATHS["a"].read_bytes()).hexdigest()
    copy = tmp_path / "c"
    copy.mkdir()
    for file in PATHS["c"].iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    assert io.sha256(copy) == io.sha256(PATHS["c"])
    save_file(
        {"encoder.weight": torch.zeros(16, 8), "encoder.bias": torch.zeros(16)},
        copy / "model-00001-of-00002.safetensors",
    )
    assert io.sha256(copy) != io.sha256(PATHS["c"])


# --- config --------------------------------------------------------------------------------------------------------
def test_tiny_config_validates_from_headers(tmp_path):
    config = load_config(TINY)
    assert config.method.name == "ties" and [m.weight for m in config.models] == [1.0, 1.0, 0.5]
    plan = validate(config_from_dict(tiny_dict(tmp_path)))
    assert plan.layout == {k: (tuple(t.shape), t.dtype) for k, t in BASE.items()}


def _mismatched(tmp_path: Path, change: str) -> str:
    state = dict(MODELS["a"])
    if change == "shape":
        state["encoder.bias"] = torch.zeros(17)
    elif change == "missing":
        del state["encoder.bias"]
    else:
        state["extra.weight"] = torch.zeros(2)
    path = tmp_path / f"{change}.safetensors"
    save_file(state, path)
    return str(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda v, t: v.update(base=str(t / "nope.safetensors")), "nope.safetensors does not exist"),
        (lambda v, t: v["models"][1].update(path=str(t / "gone")), "gone does not exist"),
        (
            lambda v, t: v["method"].update(name="tie"),
            "merge method 'tie' is unknown; expected one of average, task_arithmetic, ties, dare_task_arithmetic",
        ),
        (lambda v, t: v["method"]["params"].update(dropout=0.1), "'dropout'"),
        (lambda v, t: v["method"]["params"].update(density=0.0), "density=0.0 is out of range"),
        (lambda v, t: v["models"][0].update(weight=float("nan")), "has weight nan; expected a finite number"),
        (lambda v, t: v["models"][0].update(weight=-1.0), "has weight -1.0; ties needs > 0"),
        (lambda v, t: v.update(models=[]), "models must list at least one checkpoint"),
        (lambda v, t: v.update(exclude=["clasifier.*"]), "exclude pattern 'clasifier.*' matches no tensor of base"),
        (lambda v, t: v.update(output=str(t / "merged.pt")), "must be a .safetensors file"),
        (lambda v, t: v.update(output=v["models"][0]["path"]), "is one of the inputs"),
        (lambda v, t: v.update(output=str(FIXTURES / "base.safetensors" / "m.safetensors")), "is not writable"),
        (
            lambda v, t: v["models"][0].update(path=_mismatched(t, "shape")),
            "tensor 'encoder.bias' has shape [17] in model",
        ),
        (lambda v, t: v["models"][0].update(path=_mismatched(t, "missing")), "lacks tensor 'encoder.bias' of base"),
        (lambda v, t: v["models"][0].update(path=_mismatched(t, "extra")), "has tensor 'extra.weight' that base"),
        (lambda v, t: v.update(seeds=1), "the merge config has unknown key 'seeds'"),
        (lambda v, t: v["models"][0].update(params={"density": 0.3}), "models[0] has unknown key 'params'"),
    ],
)
def test_validation_names_each_mistake_before_any_merge(tmp_path, monkeypatch, edit, message):
    def no_merge(*args, **kwargs):
        raise AssertionError("merge ran before validation finished")

    monkeypatch.setattr(run_module, "merge", no_merge)
    monkeypatch.setattr(io.LazyStateDict, "__init__", no_merge)
    values = tiny_dict(tmp_path)
    edit(values, tmp_path)
    with pytest.raises((ConfigError, DataError)) as error:
        run_merge(config_from_dict(values))
    assert message in str(error.value)
