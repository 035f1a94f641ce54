"""S4 (CATALOG 44): the DPLR kernel against naive powers of the bilinear Abar, convolution against recurrence, the
mixer contract, gradients."""

import pytest
import torch
from torch.func import functional_call

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence import build_mixer
from paperzoo.efficiency.sequence.backbone import SequenceModel
from paperzoo.efficiency.sequence.s4.model import S4Mixer, dplr_kernel
from paperzoo.efficiency.sequence.ssm import conj_full, krylov_kernel, ssm_param_groups
from paperzoo.efficiency.sequence.testing import assert_mixer_contract


def _mixer(dim=4, d_state=8, l_max=16, **kwargs):
    torch.manual_seed(0)
    return S4Mixer(dim, d_state=d_state, l_max=l_max, **kwargs).double()


def _naive_kernel(mixer, length):
    abar, bbar = mixer.discrete_dense()  # [H, N, N], [H, N]
    return krylov_kernel(abar, bbar, mixer.output_matrix(), length)  # C Abar^k Bbar, C from C~


@pytest.mark.parametrize("length", [1, 7, 15, 16, 33])  # odd, even (Nyquist bin), l_max, beyond l_max (doubling)
def test_kernel_matches_naive_powers_of_the_discretised_a(length):
    mixer = _mixer()
    naive = _naive_kernel(mixer, length)
    assert naive.imag.abs().max() < 1e-10
    torch.testing.assert_close(mixer.kernel(length), naive.real, atol=1e-10, rtol=1e-8)


def test_structured_row_power_matches_dense_powers():
    mixer = _mixer()
    abar = mixer.discrete_dense()[0]
    row = torch.randn(2, 4, 8, dtype=torch.complex128)
    for power in (0, 1, 5, 16):
        expected = (row.unsqueeze(-2) @ torch.linalg.matrix_power(abar, power)).squeeze(-2)
        torch.testing.assert_close(mixer.row_times_abar_power(row, power), expected)


def test_bidirectional_kernels_share_a_and_differ_in_c():
    mixer = _mixer(bidirectional=True)
    kernels = mixer.kernel(16)
    assert kernels.shape == (2, 4, 16)
    torch.testing.assert_close(kernels, _naive_kernel(mixer, 16).real)
    assert not torch.allclose(kernels[0], kernels[1])


def test_kernel_from_the_hippo_init_is_the_legs_kernel():
    """C~ = C (I - Abar^L) with the module's dt: at the kernel's own length the generating function is exact; a
    wrong C~ (the plain C) gives a different kernel, so the test can fail."""
    mixer = _mixer(d_state=16, l_max=32)
    dt, eigenvalues, p, b = mixer.ssm_parameters()
    wrong = dplr_kernel(dt, eigenvalues, p, b, mixer.output_matrix()[..., :8], 32)
    assert not torch.allclose(wrong, mixer.kernel(32), atol=1e-6)


def test_woodbury_step_matches_the_dense_recurrence():
    mixer = _mixer()
    abar, bbar = mixer.discrete_dense()
    u = torch.randn(2, 4, dtype=torch.float64)
    state = mixer.initial_state(2)
    x = torch.randn(2, 4, 8, dtype=torch.complex128)
    x = conj_full(x[..., :4])  # a conjugate-symmetric state
    _, new = mixer.ssm_step(u, {**state, "x": x})
    expected = (abar @ x.unsqueeze(-1)).squeeze(-1) + bbar * u.unsqueeze(-1)
    torch.testing.assert_close(new["x"], expected)


def test_convolution_matches_recurrence_beyond_the_contract_lengths():
    mixer = _mixer(l_max=64).eval()
    x = torch.randn(2, 50, 4, dtype=torch.float64)
    with torch.no_grad():
        full = mixer(x)
        state, out = mixer.initial_state(2), []
        for t in range(50):
            y, state = mixer.step(x[:, t], state)
            out.append(y)
    torch.testing.assert_close(torch.stack(out, 1), full)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_mixer_contract(bidirectional):
    torch.manual_seed(0)
    mixer = build_mixer("s4", 8, d_state=8, l_max=32, bidirectional=bidirectional)
    assert isinstance(mixer, S4Mixer) and mixer.causal is not bidirectional
    assert_mixer_contract(mixer, 8, atol=1e-4)


def test_bidirectional_sees_the_future_and_has_no_step():
    mixer = _mixer(bidirectional=True).eval()
    x = torch.randn(1, 6, 4, dtype=torch.float64)
    changed = x.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(mixer(x)[:, 0], mixer(changed)[:, 0])
    with pytest.raises(ConfigError, match="recurrent"):
        mixer.initial_state(1)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradcheck(bidirectional):
    mixer = _mixer(dim=2, d_state=4, l_max=8, bidirectional=bidirectional)
    names = ["log_dt", "log_neg_real", "imag", "p", "b", "c_tilde", "skip"]
    params = {name: getattr(mixer, name).detach().clone().requires_grad_() for name in names}
    x = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)

    def run(x, *values):
        return functional_call(mixer, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params.values()), fast_mode=True)


def test_model_with_s4_steps_like_it_runs():
    torch.manual_seed(0)
    model = SequenceModel(11, dim=8, depth=2, mixer="s4", mixer_args={"d_state": 8, "l_max": 16}).eval()
    tokens = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        full = model(tokens)
        state, steps = model.initial_state(2), []
        for t in range(9):
            y, state = model.step(tokens[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-4, rtol=1e-4)


def test_the_ssm_parameters_are_tagged_for_their_own_learning_rate():
    mixer = S4Mixer(4, d_state=8, l_max=16)
    groups = ssm_param_groups(mixer.parameters(), lr=0.01)
    tagged = {id(p) for p in groups[1]["params"]}
    assert tagged == {id(getattr(mixer, n)) for n in ("log_dt", "log_neg_real", "imag", "p", "b")}


def test_bad_arguments():
    with pytest.raises(ConfigError, match="d_state"):
        S4Mixer(4, d_state=7)
    with pytest.raises(ConfigError, match="init"):
        S4Mixer(4, init="lin")
    with pytest.raises(ConfigError, match="l_max"):
        S4Mixer(4, l_max=0)
    with pytest.raises(ConfigError, match="dt_min"):
        S4Mixer(4, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ConfigError, match="dropout"):
        S4Mixer(4, dropout=1.0)
