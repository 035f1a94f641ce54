"""The power-law fitter: exact recovery on noise-free data, interval coverage on noisy data, clear errors."""

import numpy as np
import pytest

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.core.scaling import PowerLawFit, fit_power_law, intervals_overlap

X = np.geomspace(1e3, 1e7, 9)


def law(x: np.ndarray, a: float, alpha: float, e: float) -> np.ndarray:
    return a * x ** (-alpha) + e


@pytest.mark.parametrize(("a", "alpha", "e"), [(5.0, 0.3, 1.2), (40.0, 0.5, 0.4), (2.0, 0.1, 0.0)])
def test_recovers_a_noise_free_law_exactly(a: float, alpha: float, e: float) -> None:
    fit = fit_power_law(X, law(X, a, alpha, e), bootstrap=0)
    assert pytest.approx(a, rel=1e-4) == fit.A
    assert fit.alpha == pytest.approx(alpha, rel=1e-4)
    assert pytest.approx(e, abs=1e-4) == fit.E
    assert fit.r2 == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(fit.predict(X), law(X, a, alpha, e), rtol=1e-6)


def test_pure_power_law_is_the_log_log_line() -> None:
    y = law(X, 3.0, 0.25, 0.0)
    fit = fit_power_law(X, y, irreducible=False, bootstrap=0)
    slope, intercept = np.polyfit(np.log(X), np.log(y), 1)
    assert fit.alpha == pytest.approx(-slope, rel=1e-12)
    assert pytest.approx(np.exp(intercept), rel=1e-12) == fit.A
    assert fit.E == 0.0 and fit.r2 == pytest.approx(1.0)


def test_r2_in_log_space_matches_its_definition() -> None:
    rng = np.random.default_rng(1)
    y = law(X, 3.0, 0.25, 0.0) * np.exp(rng.normal(0, 0.05, X.size))
    fit = fit_power_law(X, y, irreducible=False, bootstrap=0)
    residual = np.log(y) - np.log(fit.predict(X))
    expected = 1 - np.sum(residual**2) / np.sum((np.log(y) - np.log(y).mean()) ** 2)
    assert fit.r2 == pytest.approx(expected, rel=1e-12)
    assert 0.9 < fit.r2 < 1.0


def test_noisy_fit_lands_inside_its_interval_and_covers_the_truth_in_most_seeds() -> None:
    a, alpha, e = 20.0, 0.4, 0.5
    x = np.geomspace(1e3, 1e7, 12)
    covered = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        y = law(x, a, alpha, e) * np.exp(rng.normal(0.0, 0.01, x.size))
        fit = fit_power_law(x, y, bootstrap=40, seed=seed)
        low, high = fit.ci["alpha"]
        assert low <= fit.alpha <= high
        assert fit.n_bootstrap > 30
        covered += low <= alpha <= high
    assert covered >= 5  # a 95% percentile interval on 12 points: well above chance, below nominal is fine


def test_pure_power_law_interval_covers_the_truth() -> None:
    covered = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y = law(X, 3.0, 0.25, 0.0) * np.exp(rng.normal(0.0, 0.05, X.size))
        for resample in ("points", "residuals"):
            fit = fit_power_law(X, y, irreducible=False, bootstrap=200, seed=seed, resample=resample)
            covered += fit.ci["alpha"][0] <= 0.25 <= fit.ci["alpha"][1]
    assert covered >= 30  # of 40


def test_bootstrap_is_reproducible_and_the_interval_narrows_with_less_noise() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, X.size)
    y_loud = law(X, 3.0, 0.25, 0.0) * np.exp(0.1 * noise)
    y_quiet = law(X, 3.0, 0.25, 0.0) * np.exp(0.01 * noise)
    one = fit_power_law(X, y_loud, irreducible=False, bootstrap=100, seed=3)
    two = fit_power_law(X, y_loud, irreducible=False, bootstrap=100, seed=3)
    assert one == two
    quiet = fit_power_law(X, y_quiet, irreducible=False, bootstrap=100, seed=3)
    width = lambda f: f.ci["alpha"][1] - f.ci["alpha"][0]  # noqa: E731
    assert width(quiet) < width(one) / 5


def test_negative_floor_for_log_likelihoods() -> None:
    y = law(X, 40.0, 0.3, -0.1)  # the irreducible part of an NLL can be negative
    assert np.all(y > 0)
    clipped = fit_power_law(X, y, bootstrap=0)
    assert pytest.approx(0.0) == clipped.E and clipped.r2 < 1.0
    fit = fit_power_law(X, y, bootstrap=0, e_min=-1.0)
    assert fit.alpha == pytest.approx(0.3, rel=1e-4) and pytest.approx(-0.1, abs=1e-5) == fit.E
    with pytest.raises(DataError, match="must be > 0"):
        fit_power_law(X, y - 1.0, irreducible=False)


def test_as_dict_flattens_intervals() -> None:
    fit = PowerLawFit(A=1.0, alpha=0.5, E=0.1, r2=0.9, ci={"alpha": (0.4, 0.6)})
    assert fit.as_dict("id ") == {
        "id A": 1.0,
        "id alpha": 0.5,
        "id E": 0.1,
        "id r2": 0.9,
        "id alpha ci low": 0.4,
        "id alpha ci high": 0.6,
    }
    assert intervals_overlap((0.0, 1.0), (1.0, 2.0)) and not intervals_overlap((0.0, 1.0), (1.1, 2.0))


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        ([1.0, 2.0], [1.0, 0.5], {}, "at least 3 points"),
        ([1.0], [1.0], {"irreducible": False}, "at least 2 points"),
        ([1.0, 1.0, 1.0], [1.0, 0.9, 0.8], {}, "distinct x"),
        ([0.0, 1.0, 2.0], [1.0, 0.9, 0.8], {}, "x must be > 0"),
        ([-1.0, 1.0, 2.0], [1.0, 0.9, 0.8], {}, "x must be > 0"),
        ([1.0, 2.0, 3.0], [1.0, 0.0, 0.8], {"irreducible": False}, "y must be > 0"),
        ([1.0, 2.0, 3.0], [1.0, float("nan"), 0.8], {}, "finite"),
        ([1.0, 2.0, 3.0], [1.0, 0.8], {}, "same length"),
    ],
)
def test_degenerate_inputs_raise(x: list[float], y: list[float], kwargs: dict[str, bool], message: str) -> None:
    with pytest.raises(DataError, match=message):
        fit_power_law(x, y, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"bootstrap": -1}, "bootstrap"), ({"confidence": 1.0}, "confidence"), ({"resample": "blocks"}, "resample")],
)
def test_bad_settings_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fit_power_law(X, law(X, 1.0, 0.5, 0.1), **kwargs)  # type: ignore[arg-type]
