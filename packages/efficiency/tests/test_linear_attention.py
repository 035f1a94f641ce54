"""Linear attention ("Transformers are RNNs", arXiv:2006.16236): against a naive per-position definition, chunking,
the recurrent state, the mixer contract, gradients and argument errors."""

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence import build_mixer
from paperzoo.efficiency.sequence.linear_attention import (
    LinearAttentionMixer,
    causal_linear_attention,
    elu_feature_map,
)
from paperzoo.efficiency.sequence.testing import assert_mixer_contract


@pytest.mark.parametrize(
    "kwargs",
    [
        {"causal": True},
        {"causal": False},
        {"causal": True, "rotary": True, "chunk_size": 5},
        {"causal": False, "rotary": True},
    ],
)
def test_mixer_contract(kwargs):
    torch.manual_seed(0)
    assert_mixer_contract(LinearAttentionMixer(16, n_heads=4, **kwargs), 16)


def naive(mixer: LinearAttentionMixer, x: torch.Tensor) -> torch.Tensor:
    """The paper's eq. 4-6 position by position, from the projections, with explicit sums over j."""
    batch, length, dim = x.shape
    q, k, v = F.linear(x, mixer.qkv.weight).view(batch, length, 3, mixer.n_heads, mixer.head_dim).unbind(2)
    q, k = elu_feature_map(q), elu_feature_map(k)  # [B, L, H, Dh]
    y = torch.zeros(batch, length, mixer.n_heads, mixer.head_dim, dtype=x.dtype)
    for i in range(length):
        numerator = torch.zeros(batch, mixer.n_heads, mixer.head_dim, dtype=x.dtype)
        denominator = torch.zeros(batch, mixer.n_heads, dtype=x.dtype)
        for j in range(i + 1 if mixer.causal else length):
            similarity = (q[:, i] * k[:, j]).sum(-1)  # [B, H]
            numerator += similarity[..., None] * v[:, j]
            denominator += similarity
        y[:, i] = numerator / (denominator[..., None] + mixer.eps)
    return F.linear(y.flatten(2), mixer.out.weight)


@pytest.mark.parametrize("causal", [True, False])
def test_forward_against_the_naive_definition(causal):
    torch.manual_seed(0)
    mixer = LinearAttentionMixer(8, n_heads=2, causal=causal, chunk_size=4).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), naive(mixer, x))


def test_chunk_size_does_not_change_the_result():
    g = torch.Generator().manual_seed(0)
    q, k = (elu_feature_map(torch.randn(2, 3, 19, 4, generator=g, dtype=torch.float64)) for _ in range(2))
    v = torch.randn(2, 3, 19, 5, generator=g, dtype=torch.float64)
    reference = causal_linear_attention(q, k, v, chunk_size=19)
    for chunk in (1, 3, 8, 64):
        torch.testing.assert_close(causal_linear_attention(q, k, v, chunk_size=chunk), reference)


def test_step_state_stays_the_same_size():
    torch.manual_seed(0)
    mixer = LinearAttentionMixer(8, n_heads=2).eval()
    state = mixer.initial_state(3)
    shapes = {(tuple(state["s"].shape), tuple(state["z"].shape))}
    for _ in range(10):
        _, state = mixer.step(torch.randn(3, 8), state)
        shapes.add((tuple(state["s"].shape), tuple(state["z"].shape)))
    assert shapes == {((3, 2, 4, 4), (3, 2, 4))}  # O(Dh^2) per head whatever the context
    assert state["position"] == 10


@pytest.mark.parametrize("causal", [True, False])
def test_mixing_matrix_is_normalised_low_rank_and_input_dependent(causal):
    torch.manual_seed(0)
    mixer = LinearAttentionMixer(8, n_heads=2, causal=causal, eps=0.0).double()
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    m = mixer.mixing_matrix(x)  # [1, 8, 12, 12]
    assert (m >= 0).all()
    torch.testing.assert_close(m.sum(-1), torch.ones(1, 8, 12, dtype=torch.float64))  # rows sum to 1 (eps = 0)
    if causal:
        assert (m.triu(1) == 0).all()
    else:
        assert torch.linalg.matrix_rank(m[0, 0]) <= mixer.head_dim  # diag(1/norm) phi(Q) phi(K)^T
    assert not torch.allclose(m, mixer.mixing_matrix(torch.randn(1, 12, 8, dtype=torch.float64)))


def test_registered_name_builds_the_mixer():
    mixer = build_mixer("linear_attention", 8, n_heads=2, causal=False)
    assert isinstance(mixer, LinearAttentionMixer) and not mixer.causal and not mixer.supports_step


@pytest.mark.parametrize("kwargs", [{"causal": True, "chunk_size": 2}, {"causal": False, "rotary": True}])
def test_gradcheck_float64(kwargs):
    torch.manual_seed(0)
    mixer = LinearAttentionMixer(4, n_heads=2, **kwargs).double()
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    params = dict(mixer.named_parameters())
    names = list(params)

    def run(x, *weights):
        return torch.func.functional_call(mixer, dict(zip(names, weights, strict=True)), (x,))

    assert torch.autograd.gradcheck(run, (x, *(p.detach().clone().requires_grad_() for p in params.values())))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 10, "n_heads": 4}, "heads"),
        ({"dim": 8, "chunk_size": 0}, "chunk_size"),
        ({"dim": 8, "eps": -1.0}, "eps"),
        ({"dim": 6, "n_heads": 2, "rotary": True}, "even"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LinearAttentionMixer(**kwargs)


def test_bidirectional_has_no_step_mode():
    mixer = LinearAttentionMixer(8, n_heads=2, causal=False)
    with pytest.raises(ConfigError, match="step"):
        mixer.step(torch.randn(1, 8), mixer.initial_state(1))
