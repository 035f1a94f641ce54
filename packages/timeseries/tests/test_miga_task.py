"""MIGATask through Lightning and the `paperzoo` command, on the tiny config (S&P 500 panel)."""

import lightning as L
import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.core.testing import conformance
from paperzoo.timeseries.miga.card import CARD
from paperzoo.timeseries.miga.metrics import evaluate
from paperzoo.timeseries.miga.task import MIGATask


@pytest.fixture(scope="module")
def tiny():
    return conformance.build_from_config(CARD.config("tiny"))


def test_tiny_config_builds_miga_and_the_loss_drops(tiny):
    task, data = tiny
    assert isinstance(task, MIGATask) and task.variant == "miga" and task.num_features == data.num_features
    batch = conformance.first_train_batch(data)
    conformance.check_forward_backward(task, batch)
    conformance.check_loss_drops(task, batch)


def test_validation_logs_cross_sectional_metrics_over_every_day(tiny):
    task, data = tiny
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.validate(task, data, verbose=False)[0]
    for name in ("ic", "rank_ic", "icir", "rank_icir", "long_short_annual", "long_short_sharpe"):
        assert f"val/{name}" in logged
    everything = data.val_set.all()
    task.eval()
    with torch.no_grad():
        figures = evaluate(task(everything["features"]), everything["returns"], everything["next_returns"], 4)
    assert logged["val/rank_ic"] == pytest.approx(figures["rank_ic"], abs=1e-6)
    assert logged["val/long_short_annual"] == pytest.approx(figures["long_short_annual"], abs=1e-5)


def test_a_feature_count_mismatch_is_a_clear_error():
    task = MIGATask(num_features=5, hidden=8, num_groups=2, experts_per_group=2, top_k=1)
    with pytest.raises(ConfigError, match="num_features=5"):
        task(torch.randn(2, 20, 14))


@pytest.mark.parametrize("variant", ["single", "moe", "miga_no_attention"])
def test_every_variant_trains_a_step(variant, tiny):
    _, data = tiny
    task = MIGATask(variant=variant, hidden=8, num_groups=2, experts_per_group=2, top_k=1)
    batch = conformance.first_train_batch(data)
    conformance.check_forward_backward(task, batch)
