"""SGConv (arXiv:2210.09298): the multi-scale kernel by hand, FFT convolution against a direct one, the mixer contract,
the ablation switches and argument errors."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence import build_mixer
from paperzoo.efficiency.sequence.backbone import SequenceModel
from paperzoo.efficiency.sequence.sgconv.model import (
    SGConvMixer,
    decay_envelope,
    default_n_scales,
    fft_conv,
    multiscale_kernel,
    scale_lengths,
    toeplitz,
)
from paperzoo.efficiency.sequence.testing import assert_mixer_contract

VARIANTS = {
    "sgconv": {},
    "bidirectional": {"bidirectional": True},
    "no_decay": {"decay": False},
    "single_scale": {"multiscale": False},
    "dense": {"multiscale": False, "dense": True},
    "channels_glu": {"channels": 2, "glu": True, "bidirectional": True},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_mixer_contract(variant):
    torch.manual_seed(0)
    # max_seq_len 20 < 33, the contract's longest input: taps beyond the kernel are zero in every view.
    assert_mixer_contract(SGConvMixer(8, kernel_dim=3, max_seq_len=20, **VARIANTS[variant]), 8)


def test_registered_name_builds_the_mixer():
    mixer = build_mixer("sgconv", 8, kernel_dim=4, max_seq_len=16)
    assert isinstance(mixer, SGConvMixer)
    assert mixer.causal and mixer.supports_step


def test_scale_lengths_and_count():
    # Scale i >= 1 is twice the previous one (scale 1 as long as scale 0): each covers [d_k 2^(i-1), d_k 2^i).
    assert scale_lengths(4, 5) == [4, 4, 8, 16, 32]
    assert sum(scale_lengths(4, 5)) == 4 * 2**4
    assert default_n_scales(64, 64) == 1
    assert default_n_scales(65, 64) == 2
    assert default_n_scales(1000, 64) == 1 + 4  # 64 * 2^4 = 1024 >= 1000 > 512
    mixer = SGConvMixer(4, kernel_dim=64, max_seq_len=1000)
    assert mixer.n_scales == 5 and mixer.kernel_length == 1024
    assert [w.shape[-1] for w in mixer.sub_kernels] == [64] * 5


def test_multiscale_kernel_by_hand():
    w = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 6.0])]
    # nearest: scale 2 upsampled x2 repeats each tap; decay 1/2 per scale.
    expected = torch.tensor([1.0, 2.0, 1.5, 2.0, 1.25, 1.25, 1.5, 1.5])
    torch.testing.assert_close(multiscale_kernel(w, 0.5, "nearest"), expected)
    # linear (half-pixel centres): [5, 6] -> sources -0.25, 0.25, 0.75, 1.25 -> 5, 5.25, 5.75, 6.
    expected_linear = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.25, 5.75, 6.0])
    torch.testing.assert_close(multiscale_kernel(w, None, "linear"), expected_linear)


def test_mixer_kernel_is_the_normalised_concatenation():
    torch.manual_seed(0)
    mixer = SGConvMixer(2, kernel_dim=2, n_scales=3, decay_rate=0.25, interpolation="nearest")
    with torch.no_grad():
        for i, w in enumerate(mixer.sub_kernels):
            w.copy_(torch.full_like(w, float(i + 1)))
    raw = torch.tensor([1.0, 1.0, 2 * 0.25, 2 * 0.25, 3 * 0.0625, 3 * 0.0625, 3 * 0.0625, 3 * 0.0625])
    causal, anticausal = mixer.kernels(8)
    assert anticausal is None and causal.shape == (1, 2, 8)
    torch.testing.assert_close(causal[0, 0], raw / mixer.kernel_norm[0, 0])
    # Longer inputs see zero taps beyond the kernel; shorter ones a prefix.
    torch.testing.assert_close(mixer.kernels(11)[0][..., 8:], torch.zeros(1, 2, 3))
    torch.testing.assert_close(mixer.kernels(5)[0], causal[..., :5])


def test_kernel_has_unit_norm_at_initialisation():
    torch.manual_seed(0)
    for kwargs in ({}, {"multiscale": False}, {"multiscale": False, "dense": True}, {"bidirectional": True}):
        mixer = SGConvMixer(6, kernel_dim=4, max_seq_len=50, **kwargs)
        causal, anticausal = mixer.kernels(mixer.kernel_length)
        torch.testing.assert_close(causal.norm(dim=-1), torch.ones(1, 6))
        if anticausal is not None:
            torch.testing.assert_close(anticausal.norm(dim=-1), torch.ones(1, 6))


def test_decay_factors_per_scale():
    torch.manual_seed(0)
    decayed = SGConvMixer(1, kernel_dim=2, n_scales=4, decay_rate=0.5)
    flat = SGConvMixer(1, kernel_dim=2, n_scales=4, decay=False)
    with torch.no_grad():
        for w_decayed, w_flat in zip(decayed.sub_kernels, flat.sub_kernels, strict=True):
            w_decayed.fill_(1.0)
            w_flat.fill_(1.0)
    # Scales cover [0,2), [2,4), [4,8), [8,16): the decayed/flat ratio is alpha^i there (up to the two Z's).
    ratio = (decayed._raw_kernel() / flat._raw_kernel())[0, 0]
    torch.testing.assert_close(ratio, torch.tensor([1.0] * 2 + [0.5] * 2 + [0.25] * 4 + [0.125] * 8))


def test_decay_envelope_matches_the_scales():
    envelope = decay_envelope(10, 2, 0.5)
    torch.testing.assert_close(envelope, torch.tensor([1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125]))
    # The single-scale ablation with decay: one interpolated sub-kernel times that envelope.
    mixer = SGConvMixer(1, kernel_dim=2, n_scales=3, multiscale=False, interpolation="nearest")
    with torch.no_grad():
        mixer.kernel.copy_(torch.tensor([[[2.0, 4.0]]]))
    expected = torch.tensor([2.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0, 4.0]) * decay_envelope(8, 2, 0.5)
    torch.testing.assert_close(mixer._raw_kernel()[0, 0], expected)


def test_parameter_counts_of_the_ablations():
    def kernel_parameters(mixer):
        return sum(p.numel() for name, p in mixer.named_parameters() if "kernel" in name)

    def counts(length):
        return [
            kernel_parameters(SGConvMixer(4, kernel_dim=8, max_seq_len=length, **kwargs))
            for kwargs in ({}, {"multiscale": False}, {"multiscale": False, "dense": True})
        ]

    small, large = counts(256), counts(4096)
    assert small == [4 * 8 * 6, 4 * 8, 4 * 256]
    assert large == [4 * 8 * 10, 4 * 8, 4 * 4096]  # multi-scale: log L; dense: L


def direct_convolution(u, kernel, anticausal=None):
    """y_i = sum_{j <= i} k[i - j] u_j + sum_{j > i} k'[j - i - 1] u_j, by explicit loops. u [L], kernels [L]."""
    length = u.shape[-1]
    y = torch.zeros_like(u)
    for i in range(length):
        for j in range(length):
            if j <= i:
                y[i] += kernel[i - j] * u[j]
            elif anticausal is not None:
                y[i] += anticausal[j - i - 1] * u[j]
    return y


@pytest.mark.parametrize("length", [1, 6, 13])
def test_fft_convolution_against_direct(length):
    g = torch.Generator().manual_seed(length)
    u, k, k_back = (torch.randn(length, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(fft_conv(u, k), direct_convolution(u, k))
    torch.testing.assert_close(fft_conv(u, k, k_back), direct_convolution(u, k, k_back))
    torch.testing.assert_close(toeplitz(k, length, k_back) @ u, direct_convolution(u, k, k_back))


def test_materialised_matrix_is_toeplitz_with_the_skip_on_the_diagonal():
    torch.manual_seed(0)
    mixer = SGConvMixer(3, kernel_dim=2, max_seq_len=16, bidirectional=True)
    m = mixer.mixing_matrix(torch.randn(2, 9, 3))  # [2, 3, 9, 9]
    assert torch.equal(m[0], m[1])  # the same for every input
    torch.testing.assert_close(m[..., 1:, 1:], m[..., :-1, :-1])  # constant along diagonals
    causal, anticausal = mixer.kernels(9)
    torch.testing.assert_close(m[0, :, 0, 0], causal[0, :, 0] + mixer.skip[0])
    torch.testing.assert_close(m[0, :, 4, 1], causal[0, :, 3])
    torch.testing.assert_close(m[0, :, 1, 4], anticausal[0, :, 2])


def test_bidirectional_sees_the_future_and_causal_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 4)
    changed = x.clone()
    changed[:, -1] += 1.0
    for bidirectional in (False, True):
        mixer = SGConvMixer(4, kernel_dim=2, max_seq_len=8, bidirectional=bidirectional).eval()
        assert torch.allclose(mixer(x)[:, 0], mixer(changed)[:, 0]) != bidirectional


@pytest.mark.parametrize("kwargs", [{"bidirectional": True, "channels": 2}, {"multiscale": False, "dense": True}])
def test_gradcheck_float64(kwargs):
    torch.manual_seed(0)
    mixer = SGConvMixer(2, kernel_dim=2, max_seq_len=6, **kwargs).double()
    x = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    params = dict(mixer.named_parameters())
    names = list(params)

    def run(x, *weights):
        return torch.func.functional_call(mixer, dict(zip(names, weights, strict=True)), (x,))

    assert torch.autograd.gradcheck(run, (x, *(p.detach().clone().requires_grad_() for p in params.values())))


def test_in_a_sequence_model_and_state_dict_round_trip():
    torch.manual_seed(0)
    args = {"kernel_dim": 4, "max_seq_len": 32, "bidirectional": True}
    model = SequenceModel(10, dim=8, depth=2, mixer="sgconv", mixer_args=args)
    tokens = torch.randint(1, 10, (2, 32))
    out = model(tokens)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert "blocks.0.mixer.kernel_norm" in model.state_dict()
    torch.manual_seed(1)
    other = SequenceModel(10, dim=8, depth=2, mixer="sgconv", mixer_args=args)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(tokens), out.detach())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dense": True}, "multiscale=False"),
        ({"decay_rate": 1.5}, "decay_rate"),
        ({"decay_rate": 0.0}, "decay_rate"),
        ({"kernel_dim": 0}, "kernel_dim"),
        ({"max_seq_len": 0}, "max_seq_len"),
        ({"n_scales": 0}, "n_scales"),
        ({"channels": 0}, "channels"),
        ({"interpolation": "cubic"}, "interpolation"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SGConvMixer(4, **kwargs)


def test_bidirectional_has_no_step_mode():
    mixer = SGConvMixer(4, kernel_dim=2, max_seq_len=8, bidirectional=True)
    assert not mixer.supports_step
    with pytest.raises(ConfigError, match="step"):
        mixer.step(torch.randn(1, 4), mixer.initial_state(1))
