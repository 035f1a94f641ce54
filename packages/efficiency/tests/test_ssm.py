"""The shared SSM math of S4 and S4D (`sequence/ssm.py`) against hand-computed values and naive references."""

import math

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.ssm import (
    S4D_INITS,
    cauchy,
    cauchy_naive,
    conj_full,
    discretize_dense,
    discretize_diagonal,
    dplr_dense,
    fft_conv,
    hippo_legs,
    krylov_kernel,
    log_dt_init,
    mark_ssm_parameter,
    matrix_power,
    nplr_legs,
    s4d_init,
    ssm_param_groups,
    toeplitz,
    vandermonde_kernel,
)

LEGS_2 = torch.tensor([complex(-0.5, math.sqrt(3) / 2)], dtype=torch.complex128)  # HiPPO-LegS, N = 2


def test_hippo_legs_by_hand():
    a, b = hippo_legs(3)
    s3, s5, s15 = math.sqrt(3), math.sqrt(5), math.sqrt(15)
    expected = torch.tensor([[-1.0, 0, 0], [-s3, -2, 0], [-s5, -s15, -3]], dtype=torch.float64)
    torch.testing.assert_close(a, expected)
    torch.testing.assert_close(b, torch.tensor([1.0, s3, s5], dtype=torch.float64))


@pytest.mark.parametrize("n", [2, 8, 16])
def test_nplr_reconstructs_hippo_legs(n):
    a, b = hippo_legs(n)
    nplr = nplr_legs(n, b_clip=None)
    v = torch.cat((nplr.v, nplr.v.conj()), 1)  # the full unitary basis [V, conj V]
    torch.testing.assert_close(v.conj().T @ v, torch.eye(n, dtype=torch.complex128))
    reconstructed = v @ dplr_dense(nplr.eigenvalues, nplr.p) @ v.conj().T
    torch.testing.assert_close(reconstructed.real, a)
    assert reconstructed.imag.abs().max() < 1e-10
    torch.testing.assert_close((v @ conj_full(nplr.b)).real, b)
    assert torch.allclose(nplr.eigenvalues.real, torch.full((n // 2,), -0.5, dtype=torch.float64))
    assert (nplr.eigenvalues.imag > 0).all()


def test_nplr_of_two_states_by_hand():
    # A + P P^T = [[-1/2, sqrt3/2], [-sqrt3/2, -1/2]]: eigenvalues -1/2 +- i sqrt(3)/2
    torch.testing.assert_close(nplr_legs(2).eigenvalues, LEGS_2)


def test_nplr_clips_the_imaginary_part_of_b():
    assert nplr_legs(32, b_clip=2.0).b.imag.abs().max() <= 2.0
    assert nplr_legs(32, b_clip=None).b.imag.abs().max() > 2.0


def test_s4d_init_spectra_by_hand():
    n = 8
    idx = torch.arange(4, dtype=torch.float64)
    lin, b = s4d_init("lin", n)
    torch.testing.assert_close(lin.imag, math.pi * idx)
    torch.testing.assert_close(lin.real, torch.full((4,), -0.5, dtype=torch.float64))
    torch.testing.assert_close(b, torch.ones(4, dtype=torch.complex128))
    inv, _ = s4d_init("inv", 4)  # (N/pi)(N/(2n+1) - 1) for N = 4: 12/pi, 4/(3 pi)
    torch.testing.assert_close(inv.imag, torch.tensor([12 / math.pi, 4 / (3 * math.pi)], dtype=torch.float64))
    real, _ = s4d_init("real", n)
    torch.testing.assert_close(real, torch.complex(-(idx + 1), torch.zeros(4, dtype=torch.float64)))
    legs, legs_b = s4d_init("legs", n)
    torch.testing.assert_close(legs, nplr_legs(n).eigenvalues)
    torch.testing.assert_close(legs_b, nplr_legs(n).b)
    torch.testing.assert_close(s4d_init("legs", 2)[0], LEGS_2)


def test_random_init_is_stable_and_seeded():
    first, _ = s4d_init("random", 16, torch.Generator().manual_seed(3))
    again, _ = s4d_init("random", 16, torch.Generator().manual_seed(3))
    other, _ = s4d_init("random", 16, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert (first.real < 0).all() and (first.imag > 0).all()


@pytest.mark.parametrize("init", S4D_INITS)
def test_every_init_has_negative_real_parts(init):
    eigenvalues, b = s4d_init(init, 16)
    assert eigenvalues.shape == b.shape == (8,)
    assert (eigenvalues.real < 0).all()


def test_log_dt_is_log_uniform_in_range():
    log_dt = log_dt_init(4000, 1e-3, 1e-1, torch.Generator().manual_seed(0))
    assert log_dt.min() >= math.log(1e-3) - 1e-6 and log_dt.max() <= math.log(1e-1) + 1e-6
    assert abs(log_dt.mean().item() - math.log(1e-2)) < 0.1  # uniform in log space: the mean is the log midpoint


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_diagonal_discretisation_matches_dense(method):
    eigenvalues, b = s4d_init("inv", 8)
    dt = torch.tensor(0.05, dtype=torch.float64)
    abar, bbar = discretize_diagonal(eigenvalues, b, dt, method)
    dense_a, dense_b = discretize_dense(torch.diag_embed(eigenvalues), b, dt, method)
    torch.testing.assert_close(torch.diag_embed(abar), dense_a)
    torch.testing.assert_close(bbar, dense_b)


def test_zoh_and_bilinear_by_hand():
    lam, b, dt = torch.tensor([-2.0 + 0j]), torch.tensor([1.0 + 0j]), torch.tensor(0.5)
    abar, bbar = discretize_diagonal(lam, b, dt, "zoh")
    torch.testing.assert_close(abar, torch.tensor([math.exp(-1.0) + 0j]))
    torch.testing.assert_close(bbar, torch.tensor([(1 - math.exp(-1.0)) / 2 + 0j]))
    abar, bbar = discretize_diagonal(lam, b, dt, "bilinear")  # (1 - 1/2) / (1 + 1/2), 0.5 / 1.5
    torch.testing.assert_close(abar, torch.tensor([1 / 3 + 0j]))
    torch.testing.assert_close(bbar, torch.tensor([1 / 3 + 0j]))


def test_vandermonde_kernel_matches_powers_of_abar():
    eigenvalues, b = s4d_init("lin", 8)
    abar, bbar = discretize_diagonal(eigenvalues, b, torch.tensor(0.1, dtype=torch.float64), "zoh")
    c = torch.randn(4, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    kernel = vandermonde_kernel(c * bbar, abar.log(), 13)
    naive = krylov_kernel(torch.diag_embed(conj_full(abar)), conj_full(bbar), conj_full(c), 13)
    torch.testing.assert_close(kernel, naive.real)
    assert naive.imag.abs().max() < 1e-12  # conjugate pairs make the full kernel real


def test_cauchy_by_hand():
    v, z, w = torch.tensor([1.0 + 0j]), torch.tensor([2.0 + 0j, 3.0 + 0j]), torch.tensor([1j])
    torch.testing.assert_close(cauchy_naive(v, z, w, conj=False), 1 / (z - 1j))
    torch.testing.assert_close(cauchy(v, z, w), 2 * z / (z**2 + 1))  # 1/(z - i) + 1/(z + i)


@pytest.mark.parametrize("conj", [True, False])
def test_vectorised_cauchy_matches_naive(conj):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 5, 6, dtype=torch.complex128, generator=g)
    w = torch.complex(-torch.rand(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g).double())
    z = torch.randn(5, 9, dtype=torch.complex128, generator=g)  # per-channel evaluation points
    torch.testing.assert_close(cauchy(v, z, w, conj=conj), cauchy_naive(v, z, w, conj=conj))


def test_matrix_power():
    a = torch.randn(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) / 2
    for exponent in (0, 1, 5, 16):
        torch.testing.assert_close(matrix_power(a, exponent), torch.linalg.matrix_power(a, exponent))


def _conv_loop(u, k, k_reverse=None):
    length = u.shape[-1]
    y = torch.zeros_like(u)
    for i in range(length):
        for j in range(length):
            if j <= i:
                y[..., i] += k[..., i - j] * u[..., j]
            elif k_reverse is not None:
                y[..., i] += k_reverse[..., j - i - 1] * u[..., j]
    return y


@pytest.mark.parametrize("length", [1, 2, 7, 16])
@pytest.mark.parametrize("two_sided", [False, True])
def test_fft_conv_and_toeplitz_match_a_loop(length, two_sided):
    g = torch.Generator().manual_seed(length)
    u = torch.randn(2, 3, length, dtype=torch.float64, generator=g)
    k = torch.randn(3, length, dtype=torch.float64, generator=g)
    k_reverse = torch.randn(3, length, dtype=torch.float64, generator=g) if two_sided else None
    expected = _conv_loop(u, k, k_reverse)
    torch.testing.assert_close(fft_conv(u, k, k_reverse), expected)
    torch.testing.assert_close((toeplitz(k, length, k_reverse) @ u.unsqueeze(-1)).squeeze(-1), expected)


def test_param_groups_split_the_tagged_parameters():
    tagged, plain = mark_ssm_parameter(torch.nn.Parameter(torch.zeros(2))), torch.nn.Parameter(torch.zeros(3))
    groups = ssm_param_groups([tagged, plain], lr=0.01, ssm_lr=0.001, weight_decay=0.1)
    assert groups[0]["params"] == [plain] and groups[0]["lr"] == 0.01 and groups[0]["weight_decay"] == 0.1
    assert groups[1]["params"] == [tagged] and groups[1]["lr"] == 0.001 and groups[1]["weight_decay"] == 0.0


def test_bad_arguments():
    with pytest.raises(ConfigError, match="init"):
        s4d_init("hippo2", 8)
    with pytest.raises(ConfigError, match="even"):
        s4d_init("lin", 7)
    with pytest.raises(ConfigError, match="even"):
        nplr_legs(5)
    with pytest.raises(ConfigError, match="dt_min"):
        log_dt_init(4, 0.1, 0.01)
    with pytest.raises(ConfigError, match="discretization"):
        discretize_diagonal(torch.ones(2) + 0j, torch.ones(2) + 0j, torch.tensor(0.1), "euler")
