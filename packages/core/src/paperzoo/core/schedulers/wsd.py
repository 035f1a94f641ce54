"""Warmup-Stable-Decay (WSD) learning-rate schedule with decay branching.

MiniCPM: Unveiling the Potential of Small Language Models with Scalable Training Strategies, arXiv:2404.06395, §4.

The LR multiplier f(s) of step s, with W warmup steps, D decay steps and N total steps (decay starts at S = N - D):

    f(s) = s / W                 for s < W            (linear warmup)
    f(s) = 1                     for W <= s < S       (stable: constant LR)
    f(s) = g((s - S) / D)        for S <= s <= N      (decay, g(0) = 1, g(1) = m)
    f(s) = m                     for s > N            (f = 1 after warmup when D = 0: a pure stable run)

with m = `min_lr_ratio` and g one of: exponential m^p (MiniCPM's choice: a constant half-life, here set so that the
decay ends exactly at m), cosine, linear and 1-sqrt (Hägele et al., arXiv:2405.18392).

Decay branching: because the stable LR does not depend on N, any stable-phase checkpoint at step s0 is a valid start
for a decay of D steps. Resume it with a schedule of `total_steps = s0 + D, decay_steps = D`: `load_state_dict` keeps
the step counter from the checkpoint and the shape from the new constructor, so one stable run yields a fully
decayed model for every budget it passes (`decay_steps=0` gives the stable run itself).
"""

import math
from typing import Any, Literal

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from paperzoo.core.errors import ConfigError, require

DecayShape = Literal["exponential", "cosine", "linear", "1-sqrt"]


def decay_curve(shape: DecayShape, progress: float, min_lr_ratio: float) -> float:
    """g(p) for p in [0, 1]: falls from 1 at p = 0 to `min_lr_ratio` at p = 1."""
    m = min_lr_ratio
    if shape == "exponential":
        return m**progress
    if shape == "cosine":
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * progress))
    if shape == "linear":
        return 1 - (1 - m) * progress
    if shape == "1-sqrt":
        return 1 - (1 - m) * math.sqrt(progress)
    raise ConfigError(f"decay_shape {shape!r} is not one of exponential, cosine, linear, 1-sqrt")


def wsd_multiplier(
    step: int,
    total_steps: int,
    warmup_steps: int,
    decay_steps: int,
    decay_shape: DecayShape = "exponential",
    min_lr_ratio: float = 0.01,
) -> float:
    """f(step): the factor WSD applies to the base LR at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return step / warmup_steps
    decay_start = total_steps - decay_steps
    if step < decay_start or decay_steps == 0:  # no decay: a stable run, which a branch may decay later
        return 1.0
    if step >= total_steps:
        return min_lr_ratio
    return decay_curve(decay_shape, (step - decay_start) / decay_steps, min_lr_ratio)


class WarmupStableDecay(LRScheduler):
    """WSD as a per-step PyTorch LR scheduler (call `step()` after every optimizer step).

    Args:
        optimizer: the wrapped optimizer; its LR is the stable (peak) LR.
        total_steps: N. None: taken from the trainer (`BaseTask` calls `set_total_steps`).
        warmup_steps: W.
        decay_steps: D, as a step count (int) or a fraction of N (float in [0, 1]). 0: never decay.
        decay_shape: exponential (MiniCPM), cosine, linear or 1-sqrt.
        min_lr_ratio: m, the LR at the end of the decay as a fraction of the peak.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        decay_steps: int | float = 0.1,
        decay_shape: DecayShape = "exponential",
        min_lr_ratio: float = 0.01,
        last_epoch: int = -1,
    ):
        require(warmup_steps >= 0, f"warmup_steps must be >= 0, got {warmup_steps}")
        require(decay_steps >= 0, f"decay_steps must be >= 0, got {decay_steps}")
        require(
            isinstance(decay_steps, int) or decay_steps <= 1,
            f"decay_steps {decay_steps} is a float, so it must be a fraction of total_steps in [0, 1]",
        )
        require(0 < min_lr_ratio <= 1, f"min_lr_ratio must be in (0, 1], got {min_lr_ratio}")
        decay_curve(decay_shape, 0.0, min_lr_ratio)  # validates the shape's name
        self.warmup_steps, self.decay_shape, self.min_lr_ratio = warmup_steps, decay_shape, min_lr_ratio
        self.requested_decay_steps = decay_steps
        self.total_steps: int | None = None
        self.decay_steps = 0
        if total_steps is not None:
            self._set_phases(total_steps)
        super().__init__(optimizer, last_epoch)

    def _set_phases(self, total_steps: int) -> None:
        decay = self.requested_decay_steps
        decay_steps = round(decay * total_steps) if isinstance(decay, float) else decay
        require(total_steps > 0, f"total_steps must be positive, got {total_steps}")
        require(
            self.warmup_steps + decay_steps <= total_steps,
            f"warmup_steps {self.warmup_steps} + decay_steps {decay_steps} exceed total_steps {total_steps}",
        )
        self.total_steps, self.decay_steps = total_steps, decay_steps

    def set_total_steps(self, total_steps: int) -> None:
        """Fix N (when it was None at construction) and re-apply the LR of the current step."""
        self._set_phases(total_steps)
        self._apply_current_lr()

    def multiplier(self, step: int) -> float:
        if self.total_steps is None:  # N not known yet: warmup and stable do not depend on it
            return step / self.warmup_steps if step < self.warmup_steps else 1.0
        return wsd_multiplier(
            step, self.total_steps, self.warmup_steps, self.decay_steps, self.decay_shape, self.min_lr_ratio
        )

    def get_lr(self) -> list[float | Tensor]:
        factor = self.multiplier(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the progress (step counter, peak LRs) but keep this scheduler's phases: that is what lets a
        decay branch start from a stable-phase checkpoint."""
        self.last_epoch = state_dict["last_epoch"]
        self._step_count = state_dict.get("_step_count", self.last_epoch + 1)
        self.base_lrs = state_dict["base_lrs"]
        self._apply_current_lr()

    def _apply_current_lr(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = self.get_lr()
