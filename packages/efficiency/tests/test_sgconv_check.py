"""SGConv's claim check in quick mode (slow tier) and its card and configs."""

import pytest

from paperzoo.core.testing import conformance
from paperzoo.efficiency.sequence.sgconv.card import CARD
from paperzoo.efficiency.sequence.sgconv.model import SGConvMixer

pytest.importorskip("paperzoo.efficiency.sequence.lra.listops")  # registers ListOpsDataModule with the CLI


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "cache"))
    CARD.import_modules()  # the task and datamodule classes resolve by short name in the config


def test_card_and_configs():
    assert (CARD.key, CARD.number, CARD.arxiv) == ("sgconv", 71, "2210.09298")
    assert {"tiny", "listops", "pathfinder"} <= set(CARD.configs())


def test_tiny_config_builds_an_sgconv_model():
    # forward/backward, loss drop and the CLI fit + checkpoint round trip run in the workspace conformance suite
    task, _ = conformance.build_from_config(CARD.config("tiny"))
    assert isinstance(task.model.blocks[0].mixer, SGConvMixer)


@pytest.mark.slow
def test_quick_check_runs_and_records_every_variant():
    from paperzoo.core.checks import run_check
    from paperzoo.efficiency.sequence.sgconv.check import LABELS, check

    result = run_check(check, quick=True)
    assert set(result.baselines) == set(LABELS.values()) - {"SGConv"}
    assert "listops test acc" in result.method and len(result.criteria) == 6
    assert result.runtime_s < 180  # < 60 s on an idle 2-core machine
