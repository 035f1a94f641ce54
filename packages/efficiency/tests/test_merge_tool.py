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
    assert lazy.layout == io.inspect(PATHS[name]) and list(lazy.layout) == list(lazy)  # shapes without reads
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
    def exploding():
        """Gives one tensor, then fails while the file is half written."""
        yield "w", torch.ones(2)
        raise RuntimeError("disk full")

    layout = {"w": ((2,), torch.float32), "v": ((2,), torch.float32)}
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_safetensors_stream(layout, exploding(), tmp_path / "w.safetensors", {})
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
        (lambda v, t: v["models"][0].update(flavour=1), "models[0] has unknown key 'flavour'"),
        (
            lambda v, t: v["models"][1].update(params={"lambda_": 0.5}),
            "model_b.ckpt) params: parameter 'lambda_' of merge method 'ties' applies to the whole merge",
        ),
        (lambda v, t: v["models"][2].update(params={"density": 1.5}), "models[2] ("),
        (lambda v, t: v["models"][2].update(params={"density": 1.5}), "density=1.5 is out of range"),
        (lambda v, t: v["models"][0].update(params={"dropout": 0.1}), "unknown parameter 'dropout'"),
        (lambda v, t: v["models"][0].update(params=[0.3]), "has params [0.3]; expected a mapping"),
    ],
)
def test_validation_names_each_mistake_before_any_merge(tmp_path, monkeypatch, edit, message):
    def no_merge(*args, **kwargs):
        raise AssertionError("merge ran before validation finished")

    monkeypatch.setattr(run_module, "merge_iter", no_merge)
    monkeypatch.setattr(io.LazyStateDict, "__init__", no_merge)
    values = tiny_dict(tmp_path)
    edit(values, tmp_path)
    with pytest.raises((ConfigError, DataError)) as error:
        run_merge(config_from_dict(values))
    assert message in str(error.value)


# --- streaming -----------------------------------------------------------------------------------------------------
def _layout(tensors):
    return {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}


def test_save_safetensors_stream_writes_a_generator_like_save_file(tmp_path):
    tensors = {"w": torch.randn(4, 3), "h": torch.randn(5).half(), "i": torch.arange(3), "s": torch.randn(3, 2).t()}
    streamed = tmp_path / "streamed.safetensors"
    written = io.save_safetensors_stream(_layout(tensors), ((k, v) for k, v in tensors.items()), streamed, {"a": "b"})
    assert written == streamed.stat().st_size
    loaded = load_file(streamed)
    assert list(loaded) == list(tensors) or set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    # the in-memory writer is the same bytes
    again = tmp_path / "dict.safetensors"
    io.save_safetensors(tensors, again, {"a": "b"})
    assert again.read_bytes() == streamed.read_bytes()


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([("b", torch.zeros(2)), ("a", torch.zeros(3))], "tensor 'b' came where the layout expects 'a'"),
        ([("a", torch.zeros(4)), ("b", torch.zeros(2))], "tensor 'a' is [4] torch.float32; the layout says [3]"),
        ([("a", torch.zeros(3).half())], "tensor 'a' is [3] torch.float16; the layout says [3] torch.float32"),
        ([("a", torch.zeros(3))], "the tensors ended before 'b' of the layout"),
        (
            [("a", torch.zeros(3)), ("b", torch.zeros(2)), ("c", torch.zeros(1))],
            "tensor 'c' came where the layout expects None",
        ),
    ],
)
def test_save_safetensors_stream_refuses_a_stream_off_its_layout(tmp_path, items, message):
    layout = {"a": ((3,), torch.float32), "b": ((2,), torch.float32)}
    with pytest.raises(DataError) as error:
        io.save_safetensors_stream(layout, iter(items), tmp_path / "w.safetensors", {})
    assert message in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_the_tool_streams_merged_tensors_into_the_writer(tmp_path, monkeypatch):
    """Each merged tensor is released by the writer before the engine makes the next one (weak references)."""
    import weakref

    from paperzoo.efficiency.merging import procedure

    alive: list[int] = []  # per requested item: how many earlier merged tensors were still alive

    def tracking(*args, **kwargs):
        refs = []
        for name, tensor in procedure.merge_iter(*args, **kwargs):
            alive.append(sum(ref() is not None for ref in refs))
            mine = tensor.clone()  # referenced by the writer only, whatever the engine's frame keeps
            del tensor
            refs.append(weakref.ref(mine))
            yield name, mine
            del mine

    monkeypatch.setattr(run_module, "merge_iter", tracking)
    values = tiny_dict(tmp_path)
    run_merge(config_from_dict(values))
    assert len(alive) == len(BASE) and max(alive) == 0
    monkeypatch.undo()
    run_merge(config_from_dict({**values, "output": str(tmp_path / "plain.safetensors")}))
    assert load_file(tmp_path / "merged.safetensors").keys() == BASE.keys()
    assert (tmp_path / "merged.safetensors").read_bytes() == (tmp_path / "plain.safetensors").read_bytes()


def test_per_model_params_reach_the_engine_and_the_card(tmp_path):
    from paperzoo.efficiency.merging.procedure import merge

    values = tiny_dict(tmp_path)
    densities = [0.3, 0.6, 0.9]
    for model, density in zip(values["models"], densities, strict=True):
        model["params"] = {"density": density}
    values["method"]["params"] = {"density": 0.5, "scope": "tensor"}
    run_merge(config_from_dict(values))
    merged = load_file(values["output"])
    expected = merge(
        BASE,
        [MODELS["a"], MODELS["b"], MODELS["c"]],
        "ties",
        weights=[1.0, 1.0, 0.5],
        exclude=("classifier.*",),
        model_params=[{"density": d} for d in densities],
        density=0.5,
        scope="tensor",
    )
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=0, msg=name)
    uniform = merge(
        BASE,
        [MODELS["a"], MODELS["b"], MODELS["c"]],
        "ties",
        weights=[1.0, 1.0, 0.5],
        exclude=("classifier.*",),
        density=0.5,
        scope="tensor",
    )
    assert any(not torch.equal(merged[n], uniform[n]) for n in uniform)
    card = run_module.read_merge_card(values["output"])
    assert card["model_params"] == [{"density": d} for d in densities]
