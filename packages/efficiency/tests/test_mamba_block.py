"""The Mamba block as a TokenMixer: the mixer contract, the reference's initialisation, step mode, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence import build_mixer
from paperzoo.efficiency.sequence.backbone import SequenceModel
from paperzoo.efficiency.sequence.mamba.block import MambaMixer
from paperzoo.efficiency.sequence.testing import assert_mixer_contract

CHECKPOINT_KEYS = {
    "in_proj.weight": (64, 16),
    "conv1d.weight": (32, 1, 4),
    "conv1d.bias": (32,),
    "x_proj.weight": (1 + 2 * 4, 32),
    "dt_proj.weight": (32, 1),
    "dt_proj.bias": (32,),
    "A_log": (32, 4),
    "D": (32,),
    "out_proj.weight": (16, 32),
}


def mixer(**kwargs) -> MambaMixer:
    torch.manual_seed(0)
    return MambaMixer(16, d_state=4, **kwargs)


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_mixer_contract(scan):
    assert_mixer_contract(mixer(scan=scan), 16)


def test_registered_and_built_by_name():
    assert isinstance(build_mixer("mamba", 8, d_state=2), MambaMixer)


def test_state_dict_names_and_shapes_are_the_checkpoints():
    state = mixer().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == CHECKPOINT_KEYS


def test_reference_initialisation():
    m = MambaMixer(32, d_state=8, dt_min=0.002, dt_max=0.05)
    assert m.dt_rank == math.ceil(32 / 16) and m.d_inner == 64
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1.0, 9.0).expand(64, 8))  # S4D-Real
    assert torch.equal(m.D.data, torch.ones(64))
    dt = F.softplus(m.dt_proj.bias)  # the bias is softplus^-1 of the initial step
    assert dt.min() >= 0.002 * 0.999 and dt.max() <= 0.05 * 1.001
    assert m.dt_proj.weight.abs().max() <= m.dt_rank**-0.5
    assert m.in_proj.bias is None and m.out_proj.bias is None and m.conv1d.bias is not None
    constant = MambaMixer(32, dt_init="constant", dt_scale=2.0)
    assert torch.allclose(constant.dt_proj.weight, torch.full_like(constant.dt_proj.weight, 2.0 * 2**-0.5))


def test_forward_is_the_block_written_out():
    """in_proj -> causal conv -> SiLU -> selective scan (sequential loop) -> gate -> out_proj, by hand."""
    m = mixer().eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        xz = x @ m.in_proj.weight.T
        xs, z = xz[..., :32], xz[..., 32:]
        w = m.conv1d.weight[:, 0]  # [E, 4]
        padded = F.pad(xs, (0, 0, 3, 0))
        u = F.silu(sum(padded[:, k : k + 6] * w[:, k] for k in range(4)) + m.conv1d.bias)
        dt, B, C = (u @ m.x_proj.weight.T).split([1, 4, 4], -1)
        delta = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)
        A = -torch.exp(m.A_log)
        h, ys = torch.zeros(2, 32, 4), []
        for t in range(6):
            h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None] * u[:, t, :, None]
            ys.append((h * C[:, t, None]).sum(-1) + m.D * u[:, t])
        expected = (torch.stack(ys, 1) * F.silu(z)) @ m.out_proj.weight.T
        torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


def test_mixing_matrix_is_lower_triangular_with_d_on_the_diagonal():
    m = mixer().eval()
    with torch.no_grad():
        M = m.mixing_matrix(torch.randn(1, 5, 16))  # [1, E, 5, 5]
        assert (M.triu(1) == 0).all()
        m.x_proj.weight.zero_()  # B = C = 0: only the skip D remains
        M = m.mixing_matrix(torch.randn(1, 5, 16))
    torch.testing.assert_close(M, torch.eye(5).expand(1, 32, 5, 5))


def test_step_state_has_a_constant_size():
    m = mixer().eval()
    state = m.initial_state(2)
    sizes = {k: v.shape for k, v in state.items()}
    with torch.no_grad():
        for _ in range(10):
            _, state = m.step(torch.randn(2, 16), state)
    assert {k: v.shape for k, v in state.items()} == sizes == {"conv": (2, 32, 3), "ssm": (2, 32, 4)}


def test_gradcheck_float64_tiny_block():
    torch.manual_seed(0)
    m = MambaMixer(4, d_state=2, expand=1, chunk_size=2).double()
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
    params = dict(m.named_parameters())

    def as_function(*values):
        return torch.func.functional_call(m, dict(zip(params, values, strict=True)), (x.detach(),))

    values = tuple(p.detach().requires_grad_() for p in params.values())
    assert torch.autograd.gradcheck(as_function, values, fast_mode=True)


def test_parallel_and_sequential_scans_give_the_same_gradients():
    fast, slow = mixer(), mixer(scan="sequential")
    x = torch.randn(2, 13, 16)
    fast(x).square().sum().backward()
    slow(x).square().sum().backward()
    for (name, p), q in zip(fast.named_parameters(), slow.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_sequence_model_generates_with_the_cache():
    torch.manual_seed(0)
    model = SequenceModel(11, dim=16, depth=2, mixer="mamba", mixer_args={"d_state": 4}, mlp_ratio=0).eval()
    tokens = torch.randint(1, 11, (2, 9))
    with torch.no_grad():
        full = model(tokens)
        state, steps = model.initial_state(2), []
        for t in range(9):
            y, state = model.step(tokens[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_bad_arguments_name_the_value():
    with pytest.raises(ConfigError, match="scan"):
        MambaMixer(8, scan="blelloch")
    with pytest.raises(ConfigError, match="dt_rank"):
        MambaMixer(8, dt_rank=0)
    with pytest.raises(ConfigError, match="dt_min"):
        MambaMixer(8, dt_min=0.2, dt_max=0.1)
