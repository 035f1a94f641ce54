"""S4D (CATALOG 66): the Vandermonde kernel against naive powers of Abar for every init and discretisation,
convolution against recurrence, the mixer contract, gradients."""

import pytest
import torch
from torch.func import functional_call

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence import build_mixer
from paperzoo.efficiency.sequence.s4d.model import S4DMixer
from paperzoo.efficiency.sequence.ssm import DISCRETIZATIONS, S4D_INITS, conj_full, discretize_dense, krylov_kernel
from paperzoo.efficiency.sequence.testing import assert_mixer_contract


def _mixer(dim=4, d_state=8, **kwargs):
    torch.manual_seed(0)
    return S4DMixer(dim, d_state=d_state, **kwargs).double()


@pytest.mark.parametrize("init", S4D_INITS)
@pytest.mark.parametrize("discretization", DISCRETIZATIONS)
def test_kernel_matches_naive_powers_of_the_discretised_a(init, discretization):
    mixer = _mixer(init=init, discretization=discretization, bidirectional=True)
    dt, eigenvalues, b, c = mixer.ssm_parameters()
    abar, bbar = discretize_dense(torch.diag_embed(conj_full(eigenvalues)), conj_full(b), dt, discretization)
    naive = krylov_kernel(abar, bbar, conj_full(c), 21)  # [2, H, L]
    torch.testing.assert_close(mixer.kernel(21), naive.real)


def test_init_sets_the_spectrum():
    mixer = _mixer(init="lin")
    _, eigenvalues, _, _ = mixer.ssm_parameters()
    torch.testing.assert_close(eigenvalues.imag, torch.pi * torch.arange(4, dtype=torch.float64).expand(4, 4))
    torch.testing.assert_close(eigenvalues.real, torch.full((4, 4), -0.5, dtype=torch.float64))
    first = S4DMixer(4, d_state=8, init="random", init_seed=1).ssm_parameters()[1]
    again = S4DMixer(4, d_state=8, init="random", init_seed=1).ssm_parameters()[1]
    assert torch.equal(first, again) and not torch.equal(first[0], first[1])  # seeded, drawn per channel


def test_dt_is_log_uniform_in_range():
    dt = S4DMixer(512, d_state=2, dt_min=1e-3, dt_max=1e-1).ssm_parameters()[0]
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001


@pytest.mark.parametrize("discretization", DISCRETIZATIONS)
def test_convolution_matches_recurrence(discretization):
    mixer = _mixer(init="inv", discretization=discretization).eval()
    x = torch.randn(2, 40, 4, dtype=torch.float64)
    with torch.no_grad():
        full = mixer(x)
        state, out = mixer.initial_state(2), []
        for t in range(40):
            y, state = mixer.step(x[:, t], state)
            out.append(y)
    torch.testing.assert_close(torch.stack(out, 1), full)


@pytest.mark.parametrize("init", ["lin", "legs"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_mixer_contract(init, bidirectional):
    torch.manual_seed(0)
    mixer = build_mixer("s4d", 8, d_state=8, init=init, bidirectional=bidirectional)
    assert isinstance(mixer, S4DMixer) and mixer.causal is not bidirectional
    assert_mixer_contract(mixer, 8, atol=1e-4)


@pytest.mark.parametrize("discretization", DISCRETIZATIONS)
def test_gradcheck(discretization):
    mixer = _mixer(dim=2, d_state=4, discretization=discretization, bidirectional=True)
    names = ["log_dt", "log_neg_real", "imag", "b", "c", "skip"]
    params = {name: getattr(mixer, name).detach().clone().requires_grad_() for name in names}
    x = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)

    def run(x, *values):
        return functional_call(mixer, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params.values()), fast_mode=True)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="d_state"):
        S4DMixer(4, d_state=3)
    with pytest.raises(ConfigError, match="init"):
        S4DMixer(4, init="hippo")
    with pytest.raises(ConfigError, match="discretization"):
        S4DMixer(4, discretization="euler")
    with pytest.raises(ConfigError, match="width"):
        build_mixer("s4d", 0)
    with pytest.raises(ConfigError, match="recurrent"):
        S4DMixer(4, bidirectional=True).step(torch.zeros(1, 4), None)
