"""The alignment checks' trainer (models from different inits, cached) and the weight matching / PLeaS claim checks."""

import math

import pytest
import torch

from paperzoo.core.card import load_object
from paperzoo.efficiency.merging.alignment.train import TrainRecipe, task_data, train_model
from paperzoo.efficiency.merging.checks import pleas as pleas_check
from paperzoo.efficiency.merging.checks import weight_matching as wm_check


def test_task_data_restricts_and_renumbers_classes():
    x_all, y_all = task_data("sklearn_digits", "val")
    x, y = task_data("sklearn_digits", "val", classes=(7, 2))
    assert len(x) == int(((y_all == 7) | (y_all == 2)).sum())
    assert set(y.tolist()) == {0, 1}
    torch.testing.assert_close(x[y == 0], x_all[y_all == 7])


def test_train_model_is_seeded_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    recipe = TrainRecipe(task="sklearn_digits", classes=(0, 1, 2), widths=(8,), epochs=1, batch_size=64)
    first = train_model(recipe, seed=0)
    files = list(tmp_path.rglob("*.safetensors"))
    assert len(files) == 1 and recipe.digest() in str(files[0])
    again = train_model(recipe, seed=0)  # read back from the cache
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = train_model(recipe, seed=1)
    assert not torch.equal(first["hidden.0.weight"], other["hidden.0.weight"])
    assert first["head.weight"].shape == (3, 8)
    assert TrainRecipe(task="sklearn_digits", epochs=2).digest() != TrainRecipe(task="sklearn_digits").digest()


@pytest.mark.parametrize("module", [wm_check, pleas_check])
def test_cards(module):
    card = module.CARD
    assert card.kind == "posthoc" and card.domain == "efficiency"
    assert load_object(card.check) is module.check
    for path in card.entry_points:
        load_object(path)


@pytest.mark.slow
def test_weight_matching_check_quick():
    result = wm_check.check(quick=True)
    names = [c.name for c in result.criteria]
    assert "mlp: WM loss barrier / naive" in names and "mlp: WM 3-way acc - STE 3-way acc" in names
    assert all(math.isfinite(c.measured) for c in result.criteria)
    assert result.baselines["mlp naive (no permutation)"]["naive loss barrier"] > result.method["mlp wm loss barrier"]


@pytest.mark.slow
def test_pleas_check_quick():
    result = pleas_check.check(quick=True)
    pair = "digits 0-4 vs 5-9"
    assert [c.name for c in result.criteria][:4] == [
        f"{pair}: width {b:g}n: PLeaS - permutation-only joint acc" for b in (1.0, 1.25, 1.5, 1.75)
    ]
    assert all(0.0 <= result.method[f"{pair}: width {b:g}n joint acc"] <= 1.0 for b in (1.0, 1.5, 2.0))
    # at 2n the data-free merge holds both models whole
    permutation = result.baselines["permutation-only (activation matching, no least squares)"]
    experts = result.baselines["experts (unmerged)"]
    assert permutation[f"{pair}: width 2n joint acc"] == pytest.approx(experts[f"{pair}: joint acc"])
