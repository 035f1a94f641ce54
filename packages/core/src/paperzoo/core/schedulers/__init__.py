"""Learning-rate schedules shared by all domains."""

from paperzoo.core.schedulers.wsd import WarmupStableDecay, decay_curve, wsd_multiplier

__all__ = ["WarmupStableDecay", "decay_curve", "wsd_multiplier"]
