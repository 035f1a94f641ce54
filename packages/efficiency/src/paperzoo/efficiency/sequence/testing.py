"""Equivalence checks every `TokenMixer` must pass, shared by the mixers' tests (the issue's equivalence list).

- the materialised L x L mixing matrix reproduces `forward` (the unified view, arXiv:2302.06218);
- a causal mixer's output at i does not change when later tokens change;
- the recurrent `step` mode reproduces `forward` position by position;
all at odd lengths, length 1 and batch 1.
"""

import torch

from paperzoo.efficiency.sequence.mixer import TokenMixer

SHAPES = ((1, 1), (1, 7), (2, 16), (3, 33))  # (batch, length)


def assert_materialized_matches(mixer: TokenMixer, dim: int, atol: float = 1e-5, shapes=SHAPES) -> None:
    """`forward_materialized(x)` equals `forward(x)` for every (batch, length) in `shapes`."""
    mixer.eval()
    for batch, length in shapes:
        x = torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            fast, materialized = mixer(x), mixer.forward_materialized(x)
        torch.testing.assert_close(materialized, fast, atol=atol, rtol=1e-4, msg=f"materialized at {x.shape}")


def assert_causal(mixer: TokenMixer, dim: int, length: int = 17, atol: float = 1e-5) -> None:
    """Changing tokens after position i leaves outputs up to i unchanged."""
    mixer.eval()
    x = torch.randn(2, length, dim, generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[:, length // 2 :] = torch.randn(2, length - length // 2, dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after = mixer(x), mixer(changed)
    torch.testing.assert_close(after[:, : length // 2], before[:, : length // 2], atol=atol, rtol=1e-4)


def assert_step_matches(mixer: TokenMixer, dim: int, atol: float = 1e-5, shapes=SHAPES) -> None:
    """Running `step` token by token from `initial_state` equals `forward` on the whole sequence."""
    mixer.eval()
    for batch, length in shapes:
        x = torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            full = mixer(x)
            state = mixer.initial_state(batch, x.device, x.dtype)
            outputs = []
            for t in range(length):
                y, state = mixer.step(x[:, t], state)
                outputs.append(y)
        torch.testing.assert_close(torch.stack(outputs, 1), full, atol=atol, rtol=1e-4, msg=f"step at {x.shape}")


def assert_mixer_contract(mixer: TokenMixer, dim: int, atol: float = 1e-5) -> None:
    """All of the above that apply to `mixer`."""
    assert_materialized_matches(mixer, dim, atol)
    if mixer.causal:
        assert_causal(mixer, dim, atol=atol)
    if mixer.supports_step:
        assert_step_matches(mixer, dim, atol)
