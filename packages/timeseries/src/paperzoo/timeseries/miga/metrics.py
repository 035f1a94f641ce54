"""Cross-sectional evaluation of stock return predictions: IC, rank IC, ICIR and a top-k long-short portfolio.

Conventions (as in qlib's `calc_ic` and MIGA's tables):
- IC of a day: the Pearson correlation, over that day's stocks, between predictions and realised returns; rank IC:
  the Spearman correlation (Pearson correlation of average ranks, so ties get the mean of their ranks as in
  `scipy.stats.spearmanr`). A day whose predictions or returns are constant across stocks has no defined
  correlation; it counts as 0 (no information), not NaN, so a collapsed model scores 0 rather than breaking the mean.
- IC / rank IC of a period: the mean of the daily values; ICIR: that mean over the standard deviation (ddof 1) of
  the daily values.
- Long-short: each day, equal weights long the k stocks with the highest predictions and short the k lowest,
  earning the mean next-day return of the longs minus that of the shorts; the annual return is 252 x the daily mean
  (arithmetic, no compounding, no costs) and the Sharpe ratio sqrt(252) x mean / std (ddof 1).
"""

import math

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from paperzoo.core.errors import require

TRADING_DAYS = 252


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N along the last axis, ties sharing their average rank. [..., N] -> [..., N] (float)

    O(N^2) pairwise comparison: exact for ties and cheap for cross-sections of a few hundred stocks.
    """
    less = (x.unsqueeze(-2) < x.unsqueeze(-1)).sum(-1)  # [..., i]: how many are below x_i
    equal = (x.unsqueeze(-2) == x.unsqueeze(-1)).sum(-1)  # including x_i itself
    return less.to(torch.float64 if x.dtype == torch.float64 else torch.float32) + (equal + 1) / 2.0


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pearson correlation along the last axis; 0 where either side is constant. [..., N] x [..., N] -> [...]"""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    scale = a.norm(dim=-1) * b.norm(dim=-1)
    covariance = (a * b).sum(-1)
    defined = scale > eps * a.shape[-1]
    return torch.where(defined, covariance / torch.where(defined, scale, torch.ones_like(scale)), 0.0)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last axis (average ranks for ties). [..., N] x [..., N] -> [...]"""
    return pearson(average_ranks(a), average_ranks(b))


def long_short_returns(prediction: torch.Tensor, returns: torch.Tensor, k: int) -> torch.Tensor:
    """Daily return of the equal-weight portfolio long the top-k and short the bottom-k predictions.

    Args:
        prediction: scores, [D, N].
        returns: the returns the positions earn, [D, N].
        k: stocks on each side, 1 <= k <= N // 2.

    Returns:
        [D]: mean return of the k highest-scored stocks minus that of the k lowest, per day.
    """
    n = prediction.shape[-1]
    require(1 <= k <= n // 2, f"long-short k must be in 1..{n // 2} for {n} stocks, got {k}")
    top = prediction.topk(k, dim=-1).indices
    bottom = prediction.topk(k, dim=-1, largest=False).indices
    return returns.gather(-1, top).mean(-1) - returns.gather(-1, bottom).mean(-1)


def summarize(ic: torch.Tensor, rank_ic: torch.Tensor, long_short: torch.Tensor) -> dict[str, float]:
    """Period figures from daily IC, rank IC and long-short returns (each [D])."""

    def ratio(values: torch.Tensor, scale: float = 1.0) -> float:
        if len(values) < 2:
            return float("nan")
        std = float(values.double().std())
        return scale * float(values.double().mean()) / std if std > 0 else float("nan")

    return {
        "ic": float(ic.double().mean()),
        "rank_ic": float(rank_ic.double().mean()),
        "icir": ratio(ic),
        "rank_icir": ratio(rank_ic),
        "long_short_daily": float(long_short.double().mean()),
        "long_short_annual": TRADING_DAYS * float(long_short.double().mean()),
        "long_short_sharpe": ratio(long_short, math.sqrt(TRADING_DAYS)),
    }


def evaluate(prediction: torch.Tensor, returns: torch.Tensor, next_returns: torch.Tensor, k: int) -> dict[str, float]:
    """All figures for predictions [D, N] against realised returns [D, N] (IC, rank IC) and next-day returns
    [D, N] (the portfolio)."""
    prediction = prediction.detach().double()
    return summarize(
        pearson(prediction, returns.double()),
        spearman(prediction, returns.double()),
        long_short_returns(prediction, next_returns.double(), k),
    )


class CrossSectionalMetrics(Metric):
    """Accumulates daily IC, rank IC and long-short returns over batches of days; `compute` gives `summarize`'s
    figures (distributed: the daily values of every rank are gathered)."""

    full_state_update = False

    def __init__(self, k: int = 4):
        super().__init__()
        self.k = k
        for name in ("ic", "rank_ic", "long_short"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, prediction: torch.Tensor, returns: torch.Tensor, next_returns: torch.Tensor) -> None:
        """prediction, returns, next_returns: [D, N]."""
        prediction = prediction.detach().double()
        self.ic.append(pearson(prediction, returns.double()))
        self.rank_ic.append(spearman(prediction, returns.double()))
        self.long_short.append(long_short_returns(prediction, next_returns.double(), self.k))

    def compute(self) -> dict[str, float]:
        return summarize(dim_zero_cat(self.ic), dim_zero_cat(self.rank_ic), dim_zero_cat(self.long_short))
