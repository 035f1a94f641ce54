"""`paperzoo merge --config merge/tiny` end to end on the fixture checkpoints: the output equals the engine's merge of
the same tensors, its metadata holds the merge card, every method runs, user mistakes are one sentence."""

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import paperzoo.core.card as card_module
from paperzoo.core.cli import main
from paperzoo.efficiency.merging import io
from paperzoo.efficiency.merging.card import CARD
from paperzoo.efficiency.merging.run import read_merge_card

REPO = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures" / "merging"
_spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)
BASE = make_fixtures.base_state()
MODELS = {name: make_fixtures.fine_tune(BASE, seed) for name, seed in (("a", 1), ("b", 2), ("c", 3))}
PATHS = {
    "base": FIXTURES / "base.safetensors",
    "a": FIXTURES / "model_a.safetensors",
    "b": FIXTURES / "model_b.ckpt",
    "c": FIXTURES / "model_c",
}


# --- run and the CLI -----------------------------------------------------------------------------------------------
@pytest.fixture
def merge_card(monkeypatch):
    monkeypatch.setattr(card_module, "discover_cards", lambda: {"merge": CARD})  # until pyproject registers it
    monkeypatch.chdir(REPO)  # tiny.yaml's paths are relative to the repository root


def run_cli(capsys, *argv):
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_paperzoo_merge_tiny_matches_the_engine_and_records_its_card(capsys, tmp_path, merge_card):
    from paperzoo.efficiency.merging.procedure import merge

    hashes_before = {name: io.sha256(path) for name, path in PATHS.items()}
    output = tmp_path / "tiny.safetensors"
    code, out, err = run_cli(capsys, "merge", "--config", "merge/tiny", f"--output={output}")
    assert code == 0, err
    figures = dict(line.split(None, 1) for line in out.splitlines())
    assert figures["tensors"] == "5" and figures["models"] == "3" and figures["parameters"] == "213"
    assert int(figures["bytes_written"]) == output.stat().st_size
    merged = load_file(output)
    expected = merge(
        BASE,
        [MODELS["a"], MODELS["b"], MODELS["c"]],
        "ties",
        weights=[1.0, 1.0, 0.5],
        exclude=["classifier.*"],
        density=0.5,
        scope="global",
        lambda_=1.0,
    )
    assert merged.keys() == expected.keys()
    for name in expected:
        assert torch.equal(merged[name], expected[name]), name
    assert torch.equal(merged["classifier.weight"], BASE["classifier.weight"])
    assert not torch.equal(merged["encoder.weight"], BASE["encoder.weight"])
    card = read_merge_card(output)
    assert card["method"] == "ties" and card["weights"] == [1.0, 1.0, 0.5] and card["exclude"] == ["classifier.*"]
    assert card["params"] == {"density": 0.5, "scope": "global", "lambda_": 1.0}
    assert card["base"]["sha256"] == hashes_before["base"]
    assert [m["sha256"] for m in card["models"]] == [hashes_before[k] for k in ("a", "b", "c")]
    assert set(card["paperzoo"]) == {"paperzoo-core", "paperzoo-efficiency"}
    assert {name: io.sha256(path) for name, path in PATHS.items()} == hashes_before  # inputs untouched
    # `paperzoo run merge` is the same command
    again = tmp_path / "again.safetensors"
    code, _, err = run_cli(capsys, "run", "merge", "--config", "merge/tiny", f"--output={again}")
    assert code == 0, err
    assert again.read_bytes() == output.read_bytes()


@pytest.mark.parametrize("method", ["average", "task_arithmetic", "dare_task_arithmetic", "dare_ties"])
def test_every_method_runs_through_the_tool(capsys, tmp_path, merge_card, method):
    output = tmp_path / f"{method}.safetensors"
    code, _, err = run_cli(
        capsys, "merge", "--config", "merge/tiny", f"--output={output}", f"--method={{name: {method}, params: {{}}}}"
    )
    assert code == 0, err
    assert read_merge_card(output)["method"] == method


def test_user_mistakes_are_one_sentence(capsys, tmp_path, merge_card):
    code, _, err = run_cli(capsys, "merge", "--config", "merge/tiny", "--method.name=tiess")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("paperzoo: error: merge method 'tiess' is unknown; expected one of")
    code, _, err = run_cli(capsys, "merge", "--config", "merge/tiny", f"--base={tmp_path / 'x.pt'}")
    assert code == 2 and err.strip().endswith("x.pt does not exist")
    assert not (tmp_path / "x.pt").exists()
