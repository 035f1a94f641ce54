"""The `paperzoo` command: user mistakes are one sentence with exit code 2; list, run, check and report work."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import paperzoo.core.card as card_module
from paperzoo.core.card import MethodCard, discover_cards
from paperzoo.core.checks import ClaimResult, Criterion
from paperzoo.core.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("paperzoo: error: ") and message in last, last


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "nope"], "unknown method 'nope'; installed methods are: "),
        (["fit", "--config", "missing.yaml"], "config 'missing.yaml' is not a file, a trainer preset"),
        (["fit", "--config", "wsd/huge"], "method 'wsd' has no config 'huge'; it has gpt_wikipedia, tiny"),
        (["fit", "--config", "wsd/tiny", "--data.init_args.batch_size=0"], "batch_size must be positive, got 0"),
        (["fit", "--config", "wsd/tiny", "--model.init_args.dimm=3"], "Option 'dimm' is not accepted"),
        (["fit", "--config", "wsd/tiny", "--model.init_args.n_heads=5"], "model width 48 must divide into 5 heads"),
        (["run", "wsd"], "method 'wsd' is of kind component: train it with `paperzoo fit`"),
    ],
)
def test_user_mistakes_are_one_sentence(capsys, argv, message):
    assert_user_error(capsys, argv, message)


def test_missing_data_path_names_it(capsys, tmp_path):
    missing = tmp_path / "nope.jsonl"
    argv = ["fit", "--config", "wsd/tiny", f"--data.init_args.path={missing}", f"--trainer.default_root_dir={tmp_path}"]
    assert_user_error(capsys, argv, f"text corpus {missing} does not exist")


def test_list_shows_the_catalog(capsys):
    code, out, _ = run_cli(capsys, "list", "--results", "/nonexistent")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("wsd"))
    assert "75" in row and "core" in row and "component" in row and "tiny" in row
    assert_user_error(capsys, ["list", "--domain", "nowhere"], "no installed method is in domain 'nowhere'")


# --- run and check, with a toy card ------------------------------------------------------------------------------
def scale_weights(checkpoint: Path, factor: float, keep_bias: bool = True) -> str:
    """A non-training method for the test: typed arguments, validated before it runs."""
    if not checkpoint.is_file():
        raise FileNotFoundError(checkpoint)
    return f"scaled {checkpoint.name} by {factor} keep_bias={keep_bias}"


def toy_check(quick: bool = False) -> ClaimResult:
    return ClaimResult(
        key="toy",
        claim="Toys are fast.",
        paper_reported="2x",
        decision_rule="speedup >= 2",
        method={"speedup": 1.5},
        baselines={"plain": {"speedup": 1.0}},
        criteria=[Criterion("speedup", 1.5, ">=", 2.0)],
        curves={"toy": [(0, 1.0), (1, 0.5)], "cosine": [(0, 1.0), (1, 0.7)]},
    )


@pytest.fixture
def toy_card(monkeypatch):
    base = discover_cards()["wsd"]
    toy = replace(
        base,
        key="toy",
        kind="posthoc",
        config_package=None,
        run=f"{__name__}:scale_weights",
        check=f"{__name__}:toy_check",
        task=None,
    )
    monkeypatch.setattr(card_module, "discover_cards", lambda: {"toy": toy, "wsd": base})
    return toy


def test_run_validates_typed_arguments_before_work(capsys, toy_card, tmp_path):
    checkpoint = tmp_path / "w.pt"
    torch.save({}, checkpoint)
    assert_user_error(capsys, ["run", "toy", f"--checkpoint={checkpoint}", "--factor=big"], "factor")
    config = tmp_path / "run.yaml"
    config.write_text(f"checkpoint: {checkpoint}\nfactor: 0.5\n")
    code, out, _ = run_cli(capsys, "run", "toy", "--config", str(config), "--keep_bias=false")
    assert code == 0 and "scaled w.pt by 0.5 keep_bias=False" in out


def test_merge_verb_is_run_merge(capsys, monkeypatch, tmp_path):
    base = discover_cards()["wsd"]
    merge = replace(base, key="merge", kind="posthoc", config_package=None, run=f"{__name__}:scale_weights", task=None)
    monkeypatch.setattr(card_module, "discover_cards", lambda: {"merge": merge, "wsd": base})
    checkpoint = tmp_path / "w.pt"
    torch.save({}, checkpoint)
    config = tmp_path / "merge.yaml"
    config.write_text(f"checkpoint: {checkpoint}\nfactor: 2.0\n")
    for verb in (["merge"], ["run", "merge"]):
        code, out, _ = run_cli(capsys, *verb, "--config", str(config))
        assert code == 0 and "scaled w.pt by 2.0 keep_bias=True" in out
    assert_user_error(capsys, ["merge", "--config", str(config), "--factor=big"], "factor")


def test_failing_check_is_written_and_reported_as_failing(capsys, toy_card, tmp_path):
    out_file = tmp_path / "results" / "toy.json"
    code, out, _ = run_cli(capsys, "check", "toy", "--out", str(out_file))
    assert code == 0
    assert "FAIL  speedup" in out and "verdict FAIL" in out
    result = ClaimResult.from_json(out_file.read_text())
    assert not result.passed and result.environment["torch"] == torch.__version__
    assert '"verdict": "fail"' in out_file.read_text()

    report = tmp_path / "RESULTS.md"
    code, _, _ = run_cli(capsys, "report", "--results", str(out_file.parent), "--out", str(report))
    assert code == 0
    text = report.read_text()
    assert "| toy | FAIL | full |" in text and "![toy](plots/toy.png)" in text
    assert (tmp_path / "plots" / "toy.png").read_bytes()[:4] == b"\x89PNG"


def test_duplicate_keys_name_both_origins(monkeypatch):
    class FakeEntry:
        def __init__(self, value, dist):
            self.value, self.dist = value, type("D", (), {"name": dist})()

        def load(self):
            return card

    card = MethodCard(
        key="dup",
        number=1,
        title="t",
        arxiv="x",
        kind="train",
        domain="d",
        entry_points=(),
        claim="c",
        reference_code="",
    )
    entries = [FakeEntry("pkg_a.m:CARD", "paperzoo-a"), FakeEntry("pkg_b.m:CARD", "paperzoo-b")]
    monkeypatch.setattr(card_module, "entry_points", lambda group: entries)
    with pytest.raises(card_module.UserError, match=r"'dup': pkg_a.m:CARD \(from paperzoo-a\) and pkg_b.m:CARD"):
        discover_cards.__wrapped__()


def test_report_renders_performance_tables(capsys, tmp_path):
    (tmp_path / "results").mkdir()
    perf = tmp_path / "perf" / "results"
    perf.mkdir(parents=True)
    record = {
        "title": "Toy throughput",
        "device": "cpu",
        "command": "python bench.py",
        "columns": ["implementation", "ratio"],
        "rows": [{"implementation": "ours", "ratio": "1.10x"}, {"implementation": "peer", "ratio": "reference"}],
        "notes": "Measured in one process.",
    }
    (perf / "toy.json").write_text(json.dumps(record))
    code, _, _ = run_cli(capsys, "report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "R.md"))
    assert code == 0
    text = (tmp_path / "R.md").read_text()
    assert "### Toy throughput" in text and "| ours | 1.10x |" in text and "Measured in one process." in text


def test_run_prints_a_dict_of_figures_one_per_line():
    from paperzoo.core.cli import format_run_result

    text = format_run_result({"error": 1.23456789e-15, "bytes_per_step": 98304, "kind": "ring"})
    assert text.splitlines() == ["error           1.23457e-15", "bytes_per_step  98304", "kind            ring"]
    assert format_run_result("done") == "done"
