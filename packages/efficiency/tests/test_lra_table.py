"""The LRA results table: rows per (mixer, task) through the shared harness, unavailable mixers skipped, pairs
detected from the datamodule, the markdown layout; the card and its configs parse; `paperzoo run lra` (slow)."""

from pathlib import Path
from unittest import mock

import pytest

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.lra.card import CARD
from paperzoo.efficiency.sequence.lra.listops import ListOpsDataModule
from paperzoo.efficiency.sequence.lra.matching import ByteMatchingDataModule
from paperzoo.efficiency.sequence.lra.table import LRARow, lra_table, mixer_available, render_markdown, unavailable

TINY_ATTENTION = {"mixer": "attention", "mixer_args": {"causal": False, "n_heads": 2}, "dim": 8, "depth": 1}


class TinyPairs(ByteMatchingDataModule):
    def documents(self) -> dict[str, str]:
        return {f"doc{i}": f"document {i} says " * (4 + i) for i in range(8)}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))


def row(mixer: str, task: str, acc: float, speed: float, memory: float) -> LRARow:
    return LRARow(mixer, task, acc, speed, memory, parameters=100, seq_len=64, steps=10, seconds=1.0)


def test_markdown_layout():
    rows = [
        row("attention", "listops", 0.2, 2.0, 10.0),
        row("attention", "pathfinder", 0.5, 1.0, 40.0),
        row("s4d", "listops", 0.4, 4.0, 5.0),
        row("s4d", "pathfinder", 0.7, 3.0, 20.0),
    ]
    text = render_markdown(rows)
    lines = text.splitlines()
    assert lines[0] == "| mixer | listops | pathfinder | avg |"
    assert lines[2] == "| attention | 0.200 | 0.500 | 0.350 |" and lines[3] == "| s4d | 0.400 | 0.700 | 0.550 |"
    assert "| s4d | pathfinder | 64 | 3.00 | 3.00 | 20.0 | 0.50 | 100 |" in lines
    assert render_markdown([]) == "(no available mixer)"


def test_table_trains_available_mixers_and_skips_missing(cache):
    data = ListOpsDataModule(num_train=32, num_val=8, num_test=16, min_length=4, max_length=24, batch_size=8)
    pairs = TinyPairs(num_train=32, num_val=8, num_test=16, max_length=16, val_fraction=0.25, test_fraction=0.25)
    mixers = {"transformer": TINY_ATTENTION, "ghost": {"mixer": "no_such_mixer", "dim": 8}}
    assert unavailable(mixers) == ["ghost"] and mixer_available("attention") and not mixer_available("no_such")
    rows = lra_table(mixers, {"listops": data, "retrieval": pairs}, max_steps=2, measure_memory=False)
    assert [(r.mixer, r.task) for r in rows] == [("transformer", "listops"), ("transformer", "retrieval")]
    for r in rows:
        assert 0.0 <= r.accuracy <= 1.0 and r.steps == 2 and r.parameters > 0 and r.steps_per_s > 0
    assert rows[0].seq_len == 24 and rows[1].seq_len == 16
    with pytest.raises(ConfigError, match="num_classes"):
        lra_table({"bad": {**TINY_ATTENTION, "num_classes": 3}}, {"listops": data}, max_steps=1)


def test_card():
    assert (CARD.key, CARD.number, CARD.kind) == ("lra", 72, "eval") and CARD.run and CARD.check
    assert "tiny" in CARD.configs()


@pytest.mark.slow  # builds the full-size model of every task's fit config (about a minute)
def test_fit_configs_parse_and_link():
    from paperzoo.core.testing import conformance
    from paperzoo.efficiency.sequence.lra import image, pathfinder, text  # noqa: F401  (short class names resolve)

    for name, path in CARD.configs().items():
        if name.endswith("_attention"):
            task, data = conformance.build_from_config(path)
            assert task.hparams.num_classes == data.num_classes and task.hparams.vocab_size == data.vocab_size
            assert task.paired == bool(getattr(data, "paired", False))


@pytest.mark.slow
def test_paperzoo_run_lra_tiny(cache, capsys):
    import paperzoo.core.card as card_module
    from paperzoo.core.cli import dispatch

    found = card_module.discover_cards()
    with mock.patch.object(card_module, "discover_cards", lambda: {**found, "lra": CARD}):
        dispatch(["run", "lra", "--config", str(Path(CARD.config("tiny")))])
    out = capsys.readouterr().out
    assert "| mixer | listops | pathfinder | avg |" in out and "| s4d |" in out
