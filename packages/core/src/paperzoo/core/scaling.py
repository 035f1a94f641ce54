"""Power-law fits for scaling studies: `L(X) = A * X^-alpha + E`, with bootstrapped confidence intervals.

Used by the TSFM scaling-law check (CATALOG 79, "Towards Neural Scaling Laws for Time Series Foundation Models",
https://arxiv.org/abs/2410.12360) and by any other paper that fits a loss against parameters, data or compute.

Method (all fits are least squares in log space, because scaling data spans orders of magnitude and the noise of a
loss is closer to multiplicative than additive):

- without the irreducible term (`irreducible=False`, what the TSFM paper fits: a straight line in log-log axes,
  `log L = log A - alpha log X`): ordinary least squares, in closed form.
- with it (`irreducible=True`): for a fixed E, `log(L - E) = log A - alpha log X` is again a straight line, so
  (A, alpha) follow in closed form. E is profiled: a grid of 64 values over [e_min, min L), crowded towards
  min L, picks the E whose straight-line fit leaves the smallest log-space residual
  `sum (log L - log(A X^-alpha + E))^2`, then `scipy.optimize.least_squares` (bounded trust region) refines
  (log A, alpha, E) jointly on the same residuals, E kept inside [e_min, min L).
- confidence intervals: percentile bootstrap. `resample="points"` refits on points drawn with replacement (resamples
  with fewer distinct X than parameters are skipped); `resample="residuals"` adds resampled log-space residuals to the
  fitted curve (better with very few points, but zero-width on a perfect fit).
- R^2 is computed in log space, `1 - SS_res / SS_tot` of `log L` against the fit, the quantity the fit minimises.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize

from paperzoo.core.errors import ConfigError, DataError

FloatArray = npt.NDArray[np.float64]
Interval = tuple[float, float]

#: how close to min(L) the irreducible term may come, as a fraction of min(L) - e_min
_E_MARGIN = 1e-6
_GRID_POINTS = 64


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted `L(X) = A * X^-alpha + E` (E = 0 when fitted without the irreducible term).

    Attributes:
        A, alpha, E: the point estimates.
        r2: coefficient of determination in log space.
        ci: parameter name ("A", "alpha", "E") -> (low, high) percentile bootstrap interval; empty without bootstrap.
        confidence: the interval's nominal coverage, e.g. 0.95.
        irreducible: whether E was fitted.
        n_points: how many (X, L) points the fit used.
        n_bootstrap: how many bootstrap refits succeeded.
    """

    A: float
    alpha: float
    E: float
    r2: float
    ci: dict[str, Interval] = field(default_factory=dict)
    confidence: float = 0.95
    irreducible: bool = True
    n_points: int = 0
    n_bootstrap: int = 0

    def predict(self, x: npt.ArrayLike) -> FloatArray:
        """L at `x` (any shape, every value > 0)."""
        values = np.asarray(x, dtype=np.float64)
        return self.A * values ** (-self.alpha) + self.E

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat figures for a claim-check record: A, alpha, E, r2 and each interval's ends."""
        out = {f"{prefix}A": self.A, f"{prefix}alpha": self.alpha, f"{prefix}E": self.E, f"{prefix}r2": self.r2}
        for name, (low, high) in self.ci.items():
            out[f"{prefix}{name} ci low"], out[f"{prefix}{name} ci high"] = low, high
        return out


def fit_power_law(
    x: Sequence[float] | npt.ArrayLike,
    y: Sequence[float] | npt.ArrayLike,
    irreducible: bool = True,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    resample: Literal["points", "residuals"] = "points",
    e_min: float = 0.0,
) -> PowerLawFit:
    """Fit `L(X) = A * X^-alpha + E` by least squares in log space (see the module docstring for the method).

    Args:
        x: the scaled quantity (parameters, data, compute), every value > 0. [N]
        y: the loss at each x, every value > 0 (the fit is in log space). [N]
        irreducible: fit E (3 parameters) or fix E = 0 (2 parameters, a straight line in log-log axes).
        bootstrap: number of bootstrap refits for the confidence intervals (0: no intervals).
        seed: seed of the bootstrap draws.
        confidence: nominal coverage of the percentile intervals, in (0, 1).
        resample: "points" (pairs bootstrap) or "residuals" (log-space residual bootstrap).
        e_min: the lowest allowed E (0 for losses bounded below by 0; a negative bound suits a negative log-likelihood
            of continuous data, whose irreducible part, an entropy, can be negative).

    Returns:
        The fit, its log-space R^2 and the bootstrap intervals of A, alpha and E.

    Raises:
        DataError: mismatched or non-finite inputs, non-positive x or y, e_min not below min(y), or fewer points
            (or distinct x values) than parameters.
        ConfigError: a bad `bootstrap`, `confidence` or `resample`.
    """
    xs, ys = _validate(x, y, irreducible, e_min)
    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0 refits, got {bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    if resample not in ("points", "residuals"):
        raise ConfigError(f"resample must be 'points' or 'residuals', got {resample!r}")

    log_a, alpha, e = _fit(xs, ys, irreducible, e_min)
    fitted = np.exp(log_a) * xs ** (-alpha) + e
    r2 = _r2(np.log(ys), np.log(fitted))

    ci: dict[str, Interval] = {}
    n_ok = 0
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        n_params = 3 if irreducible else 2
        residuals = np.log(ys) - np.log(fitted)
        samples: list[tuple[float, float, float]] = []
        for _ in range(bootstrap):
            if resample == "points":
                index = rng.integers(0, len(xs), size=len(xs))
                bx, by = xs[index], ys[index]
                if len(np.unique(bx)) < n_params:
                    continue
            else:
                bx = xs
                by = fitted * np.exp(rng.choice(residuals, size=len(xs), replace=True))
                if irreducible and np.min(by) <= e_min:
                    continue
            try:
                b_log_a, b_alpha, b_e = _fit(bx, by, irreducible, e_min)
            except (DataError, ValueError, FloatingPointError):
                continue
            samples.append((float(np.exp(b_log_a)), b_alpha, b_e))
        n_ok = len(samples)
        if n_ok:
            table = np.asarray(samples)  # [n_ok, 3]
            tail = 100.0 * (1.0 - confidence) / 2.0
            low, high = np.percentile(table, [tail, 100.0 - tail], axis=0)
            ci = {name: (float(low[i]), float(high[i])) for i, name in enumerate(("A", "alpha", "E"))}
    return PowerLawFit(
        A=float(np.exp(log_a)),
        alpha=float(alpha),
        E=float(e),
        r2=float(r2),
        ci=ci,
        confidence=confidence,
        irreducible=irreducible,
        n_points=len(xs),
        n_bootstrap=n_ok,
    )


def intervals_overlap(a: Interval, b: Interval) -> bool:
    """Whether two closed intervals share a point."""
    return max(a[0], b[0]) <= min(a[1], b[1])


# --- internals -----------------------------------------------------------------------------------------------------
def _validate(x: npt.ArrayLike, y: npt.ArrayLike, irreducible: bool, e_min: float) -> tuple[FloatArray, FloatArray]:
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    ys = np.asarray(y, dtype=np.float64).reshape(-1)
    if xs.shape != ys.shape:
        raise DataError(f"x and y must have the same length, got {xs.size} and {ys.size}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise DataError("x and y must be finite; got NaN or infinity")
    if np.any(xs <= 0):
        raise DataError(f"every x must be > 0 for a power law, got {xs[xs <= 0].tolist()}")
    if np.any(ys <= 0):
        raise DataError(f"every y must be > 0 for a fit in log space, got {ys[ys <= 0].tolist()}")
    if irreducible and e_min >= float(np.min(ys)):
        raise DataError(f"e_min {e_min:g} must lie below the smallest y {float(np.min(ys)):g}")
    n_params = 3 if irreducible else 2
    if xs.size < n_params:
        raise DataError(f"a power law with {n_params} parameters needs at least {n_params} points, got {xs.size}")
    if len(np.unique(xs)) < n_params:
        raise DataError(
            f"a power law with {n_params} parameters needs at least {n_params} distinct x values, "
            f"got {len(np.unique(xs))}"
        )
    return xs, ys


def _lines(log_x: FloatArray, log_y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Least-squares lines log_y[k] = c[k] - alpha[k] * log_x for each row k of log_y [K, N]; returns (c, alpha)."""
    centred_x = log_x - log_x.mean()
    slope = (log_y - log_y.mean(axis=-1, keepdims=True)) @ centred_x / float(centred_x @ centred_x)  # [K]
    intercept = log_y.mean(axis=-1) - slope * log_x.mean()
    return intercept, -slope


def _log_residuals(
    log_a: FloatArray | float, alpha: FloatArray | float, e: FloatArray | float, x: FloatArray, log_y: FloatArray
) -> FloatArray:
    """log(A x^-alpha + E) - log y, broadcasting parameters [K, 1] against points [N]."""
    prediction = np.exp(log_a - alpha * np.log(x)) + e
    return np.log(np.maximum(prediction, 1e-300)) - log_y


def _fit(x: FloatArray, y: FloatArray, irreducible: bool, e_min: float) -> tuple[float, float, float]:
    """(log A, alpha, E) minimising the log-space squared residuals."""
    log_x, log_y = np.log(x), np.log(y)
    if not irreducible:
        log_a, alpha = _lines(log_x, log_y[None, :])
        return float(log_a[0]), float(alpha[0]), 0.0

    # profile E on a grid that crowds towards min(L) (where the curvature of log(L - E) changes fastest): the
    # profile can have several local minima, which a single bounded search would not see
    y_min = float(np.min(y))
    e_max = y_min - _E_MARGIN * (y_min - e_min)
    grid = e_min + (e_max - e_min) * (1.0 - np.geomspace(1.0, _E_MARGIN, _GRID_POINTS))  # [K]
    log_a, alpha = _lines(log_x, np.log(y[None, :] - grid[:, None]))  # [K], [K]
    profile = np.sum(_log_residuals(log_a[:, None], alpha[:, None], grid[:, None], x, log_y) ** 2, axis=1)
    best = int(np.argmin(profile))
    start = np.array([log_a[best], alpha[best], grid[best]])

    # refine all three jointly on the log-space residuals (the profile's line is fitted to log(L - E), not to
    # log L, so the joint optimum differs slightly)
    def residuals(theta: FloatArray) -> FloatArray:
        return _log_residuals(float(theta[0]), float(theta[1]), float(theta[2]), x, log_y)

    lower = np.array([-np.inf, -np.inf, e_min])
    upper = np.array([np.inf, np.inf, e_max])
    try:
        polished = optimize.least_squares(residuals, start, bounds=(lower, upper), method="trf", x_scale="jac")
        if np.sum(polished.fun**2) <= profile[best]:
            return float(polished.x[0]), float(polished.x[1]), float(polished.x[2])
    except ValueError:
        pass
    return float(start[0]), float(start[1]), float(start[2])


def _r2(observed: FloatArray, fitted: FloatArray) -> float:
    ss_res = float(np.sum((observed - fitted) ** 2))
    ss_tot = float(np.sum((observed - np.mean(observed)) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot
