"""Merging testbed builders: cache by recipe hash, load without training, rebuild on a new recipe, atomic files,
the build lock, the networks and evaluation helpers, the report's averaging and cosines."""

import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError, DataError
from paperzoo.efficiency.merging.testbed import (
    TextRecipe,
    VisionNet,
    VisionRecipe,
    data,
    text_testbed,
    vision_testbed,
)
from paperzoo.efficiency.merging.testbed import build as build_module
from paperzoo.efficiency.merging.testbed import text as text_module
from paperzoo.efficiency.merging.testbed import vision as vision_module
from paperzoo.efficiency.merging.testbed.report import average, relative_update, task_vector_cosines


@pytest.fixture(autouse=True)
def one_thread_and_temp_cache(monkeypatch: pytest.MonkeyPatch, tmp_path):  # noqa: ANN001, ANN201
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "cache"))
    with torch_threads(1):
        yield


def _no_training(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    raise AssertionError("the testbed trained although it is cached")


def test_vision_testbed_builds_once_then_loads_and_a_new_recipe_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = VisionRecipe.tiny()
    built = vision_testbed(recipe, progress=False)
    assert not built.loaded_from_cache and built.tasks == recipe.tasks
    assert built.directory.name.startswith("vision-") and built.directory.parent.name == "testbed"
    assert not list(built.directory.glob("*.tmp")) and (built.directory / "meta.json").is_file()
    assert set(built.base) == {f"backbone.{k}" for k in VisionNet(2, 32, (4, 8)).backbone.state_dict()}
    for task in recipe.tasks:
        assert built.paths[task].is_file() and set(built.experts[task]) == set(built.base)
        assert set(built.heads[task]) == {"head.weight", "head.bias"}
        assert built.heads[task]["head.weight"].shape == (data.num_classes(task), 32)
        assert not torch.equal(built.experts[task]["backbone.fc1.weight"], built.base["backbone.fc1.weight"])
        # The stored accuracy is what evaluating the stored tensors gives.
        assert built.accuracy(built.experts[task], task) == pytest.approx(built.expert_accuracy[task])
        probe = built.accuracy(built.base, task, head=built.probe_heads[task])
        assert probe == pytest.approx(built.probe_accuracy[task])

    monkeypatch.setattr(vision_module, "train_loop", _no_training)
    loaded = vision_testbed(recipe, progress=False)
    assert loaded.loaded_from_cache and loaded.directory == built.directory
    assert loaded.build_seconds == built.build_seconds
    for task in recipe.tasks:
        assert all(torch.equal(loaded.experts[task][k], v) for k, v in built.experts[task].items())

    changed = replace(recipe, finetune_steps=recipe.finetune_steps + 1)
    with pytest.raises(AssertionError, match="trained although"):
        vision_testbed(changed, progress=False)  # a new hash: it must train
    assert build_module.testbed_dir("vision", changed) != built.directory
    assert not (build_module.testbed_dir("vision", changed) / "meta.json").exists()  # a failed build is unfinished


def test_vision_build_is_deterministic(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    recipe = replace(VisionRecipe.tiny(), tasks=("lfw_faces",), pretrain_steps=5)
    rng = torch.get_rng_state()
    first = vision_testbed(recipe, progress=False)
    assert torch.equal(torch.get_rng_state(), rng)  # the build leaves the caller's random stream alone
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "other"))
    second = vision_testbed(recipe, progress=False)
    assert second.directory != first.directory and not second.loaded_from_cache
    for key, value in first.experts["lfw_faces"].items():
        assert torch.equal(second.experts["lfw_faces"][key], value), key


def test_vision_net_layout_and_network_helper() -> None:
    net = VisionNet(5, width=16, channels=(4, 8))
    names = [name for name, _ in net.named_parameters()]
    assert all(name.startswith(("backbone.", "head.")) for name in names)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    x = torch.randn(3, 1, 28, 28)
    assert net.features(x).shape == (3, 16) and net(x).shape == (3, 5)
    torch.testing.assert_close(net(x), net.head(net.features(x)))
    with pytest.raises(ConfigError, match="unknown vision tasks"):
        VisionRecipe(tasks=("mnist",))


def _fake_documents(corpus, sources):  # noqa: ANN001, ANN202
    """Small synthetic corpora with distinct statistics, so the text build takes seconds."""
    alphabet = {"wikipedia": "the cat sat on a mat ", "stdlib": "def f(x):\n    return x\n", "wordnet": "dog: canine\n"}
    return [alphabet[corpus] * 40 + str(i) for i in range(40)]


def test_text_testbed_builds_once_then_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_corpus_documents", _fake_documents)
    data._load_corpus_cached.cache_clear()
    try:
        recipe = TextRecipe.tiny()
        built = text_testbed(recipe, progress=False)
        assert not built.loaded_from_cache and not list(built.directory.glob("*.tmp"))
        for corpus in recipe.corpora:
            state = built.experts[corpus]
            assert torch.equal(state["embed.weight"], state["head.weight"])  # tied weights stored under both keys
            assert built.paths[corpus].is_file()
            assert built.loss(state, corpus) == pytest.approx(built.loss_table[corpus][corpus], rel=1e-5)
            assert built.loss(state, corpus) == pytest.approx(built.expert_loss[corpus], rel=1e-5)
            assert 0 <= built.accuracy(state, corpus) <= 1
            windows = built.windows(corpus, "test")
            assert windows.shape[1] == recipe.seq_len + 1 and 1 <= len(windows) <= recipe.eval_windows
        assert built.loss(built.base, "wordnet") == pytest.approx(built.base_loss["wordnet"], rel=1e-5)
        model = built.model(built.base)
        assert model.head.weight is model.embed.weight and not model.training

        monkeypatch.setattr(text_module, "train_loop", _no_training)
        loaded = text_testbed(recipe, progress=False)
        assert loaded.loaded_from_cache and loaded.loss_table == built.loss_table
        assert all(torch.equal(loaded.base[k], v) for k, v in built.base.items())
        with pytest.raises(AssertionError, match="trained although"):
            text_testbed(replace(recipe, seed=1), progress=False)
    finally:
        data._load_corpus_cached.cache_clear()


def test_evaluation_windows_are_evenly_spaced_and_fixed() -> None:
    tokens = torch.arange(101)
    windows = text_module._windows(tokens, seq_len=10, count=4)  # 10 windows available, take 4 evenly spaced
    assert windows.shape == (4, 11)
    assert windows[:, 0].tolist() == [0, 30, 60, 90] and torch.equal(windows[0], torch.arange(11))
    with pytest.raises(DataError, match="shorter than one window"):
        text_module._windows(torch.arange(5), seq_len=10, count=1)


def test_state_files_are_safetensors_and_bad_files_are_named(tmp_path) -> None:  # noqa: ANN001
    shared = torch.randn(3, 2)
    build_module.save_state({"a": shared, "b": shared}, tmp_path / "s.safetensors")  # tied tensors are fine
    loaded = build_module.load_state(tmp_path / "s.safetensors")
    assert torch.equal(loaded["a"], shared) and torch.equal(loaded["b"], shared)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DataError, match="bad.safetensors"):
        build_module.load_state(tmp_path / "bad.safetensors")
    with pytest.raises(DataError, match="missing.safetensors"):
        build_module.load_state(tmp_path / "missing.safetensors")


def test_build_lock_excludes_another_process(tmp_path) -> None:  # noqa: ANN001
    probe = (
        "import fcntl, sys\n"
        f"handle = open({str(tmp_path / '.lock')!r}, 'a+')\n"
        "try:\n    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n"
        "    sys.exit(3)\n"
    )
    with build_module.build_lock(tmp_path):
        assert subprocess.run([sys.executable, "-c", probe]).returncode == 3
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


def test_recipe_hash_covers_the_recipe_and_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    quick = build_module.recipe_hash("vision", VisionRecipe.quick())
    assert quick == build_module.recipe_hash("vision", VisionRecipe.quick())
    assert quick != build_module.recipe_hash("vision", replace(VisionRecipe.quick(), seed=1))
    assert quick != build_module.recipe_hash("text", VisionRecipe.quick())
    monkeypatch.setattr(build_module, "VERSION", build_module.VERSION + 1)
    assert quick != build_module.recipe_hash("vision", VisionRecipe.quick())


def test_report_average_cosines_and_relative_update_by_hand() -> None:
    base = {"w": torch.zeros(2), "b": torch.ones(1)}
    a = {"w": torch.tensor([1.0, 0.0]), "b": torch.ones(1)}
    b = {"w": torch.tensor([1.0, 1.0]), "b": torch.ones(1) * 2}
    merged = average([a, b])
    torch.testing.assert_close(merged["w"], torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(merged["b"], torch.tensor([1.5]))
    # task vectors (w, b): a = (1, 0, 0), b = (1, 1, 1): cosine 1 / sqrt(3)
    assert task_vector_cosines(base, {"a": a, "b": b})["a|b"] == pytest.approx(3**-0.5)
    assert relative_update(base, b) == pytest.approx(3**0.5)
