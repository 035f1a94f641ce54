"""WSD against hand-computed values and, with hypothesis, the schedule's shape for any phase lengths."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from paperzoo.core.errors import ConfigError
from paperzoo.core.schedulers import WarmupStableDecay, wsd_multiplier

SHAPES = ("exponential", "cosine", "linear", "1-sqrt")


def lrs(scheduler: WarmupStableDecay, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        values.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return values


def make(lr: float = 1.0, **kwargs) -> WarmupStableDecay:
    return WarmupStableDecay(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr), **kwargs)


def test_hand_computed_exponential():
    # W = 2, N = 10, D = 4 -> decay from step 6; exponential to m = 0.01: m ** ((s - 6) / 4)
    values = lrs(make(total_steps=10, warmup_steps=2, decay_steps=4, min_lr_ratio=0.01), 11)
    expected = [0.0, 0.5, 1, 1, 1, 1, 1, 0.01**0.25, 0.01**0.5, 0.01**0.75, 0.01]
    assert values == pytest.approx(expected)


def test_hand_computed_linear_fraction():
    # decay_steps as a fraction: 0.5 of 8 = 4 steps, linear from 1 to 0.2
    assert lrs(make(lr=2.0, total_steps=8, decay_steps=0.5, decay_shape="linear", min_lr_ratio=0.2), 9) == (
        pytest.approx([2, 2, 2, 2, 2, 2 * 0.8, 2 * 0.6, 2 * 0.4, 2 * 0.2])
    )


def test_full_cosine_equals_torch_cosine_annealing():
    # warmup 0 and decay over the whole run: WSD is cosine annealing to eta_min = m * lr
    ours = lrs(make(lr=0.1, total_steps=20, decay_steps=20, decay_shape="cosine", min_lr_ratio=0.1), 20)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=20, eta_min=0.01)
    theirs = []
    for _ in range(20):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert ours == pytest.approx(theirs)


@given(
    total=st.integers(2, 400),
    warmup_share=st.floats(0, 0.5),
    decay_share=st.floats(0.01, 0.5),
    shape=st.sampled_from(SHAPES),
    min_ratio=st.floats(0.001, 0.9),
)
def test_shape_properties(total, warmup_share, decay_share, shape, min_ratio):
    warmup = int(warmup_share * total)
    decay = max(1, min(total - warmup, round(decay_share * total)))
    f = [wsd_multiplier(s, total, warmup, decay, shape, min_ratio) for s in range(total + 1)]
    start = total - decay
    # warmup rises monotonically, with steps of 1/W, and reaches the stable value
    assert all(b - a == pytest.approx(1 / warmup) for a, b in zip(f[:warmup], f[1 : warmup + 1], strict=True))
    # stable: exactly the peak; decay: non-increasing
    assert all(v == 1.0 for v in f[warmup : start + 1])
    assert all(b <= a + 1e-12 for a, b in zip(f[start:], f[start + 1 :], strict=False))
    # continuity: the decay starts at the peak, and no decay step jumps by more than the whole drop / sqrt steps
    assert f[start] == 1.0
    jump = max((a - b for a, b in zip(f[start:], f[start + 1 :], strict=False)), default=0.0)
    assert jump <= (1 - min_ratio) * (1 / math.sqrt(decay) if shape == "1-sqrt" else math.pi / 2 / decay) + 1e-9 or (
        shape == "exponential" and jump <= 1 - min_ratio ** (1 / decay) + 1e-9
    )
    # ends at the minimum and stays there
    assert f[total] == pytest.approx(min_ratio)
    assert wsd_multiplier(total + 5, total, warmup, decay, shape, min_ratio) == pytest.approx(min_ratio)


def test_decay_branch_from_stable_checkpoint_keeps_new_phases():
    stable = make(warmup_steps=2, decay_steps=0, total_steps=100)
    lrs(stable, 30)
    branch = make(total_steps=40, warmup_steps=2, decay_steps=10, decay_shape="linear", min_lr_ratio=0.1)
    branch.load_state_dict(stable.state_dict())
    assert branch.last_epoch == 30 and branch.total_steps == 40
    assert lrs(branch, 11) == pytest.approx([1 - 0.9 * k / 10 for k in range(11)])


def test_no_decay_is_a_stable_run_that_never_drops():
    assert lrs(make(total_steps=5, warmup_steps=1, decay_steps=0), 9) == pytest.approx([0, 1, 1, 1, 1, 1, 1, 1, 1])


def test_total_steps_bound_late_by_the_trainer():
    scheduler = make(warmup_steps=2, decay_steps=0.5, decay_shape="linear", min_lr_ratio=0.5)
    scheduler.set_total_steps(8)
    assert lrs(scheduler, 9) == pytest.approx([0, 0.5, 1, 1, 1, 0.875, 0.75, 0.625, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"total_steps": 10, "warmup_steps": 8, "decay_steps": 5}, "exceed total_steps 10"),
        ({"decay_steps": 1.5}, "fraction of total_steps"),
        ({"min_lr_ratio": 0.0}, "min_lr_ratio must be in"),
        ({"decay_shape": "step"}, "decay_shape 'step'"),
    ],
)
def test_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make(**kwargs)
