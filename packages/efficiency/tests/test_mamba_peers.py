"""Weights port between our Mamba block and transformers' `MambaMixer` (slow path) and mambapy's `MambaBlock`."""

import os

import pytest
import torch

from paperzoo.efficiency.sequence.mamba.block import MambaMixer

pytestmark = pytest.mark.peers
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ours(dim=16, d_state=8) -> MambaMixer:
    torch.manual_seed(0)
    block = MambaMixer(dim, d_state=d_state)
    with torch.no_grad():  # move every parameter off its structured init, so that each name must map right
        for p in block.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return block.eval()


@pytest.mark.parametrize("length", [1, 7, 64])
def test_transformers_mamba_mixer_slow_path(length):
    modeling = pytest.importorskip("transformers.models.mamba.modeling_mamba")
    from transformers import MambaConfig

    block = ours()
    config = MambaConfig(hidden_size=16, state_size=8, expand=2, conv_kernel=4, time_step_rank=block.dt_rank)
    theirs = modeling.MambaMixer(config, layer_idx=0).eval()
    theirs.load_state_dict(block.state_dict(), strict=True)
    x = torch.randn(2, length, 16)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
    ported = MambaMixer(16, d_state=8).eval()
    ported.load_state_dict(theirs.state_dict(), strict=True)  # and back
    with torch.no_grad():
        torch.testing.assert_close(ported(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pscan", [True, False])
def test_mambapy_mamba_block(pscan):
    mamba = pytest.importorskip("mambapy.mamba")
    block = ours()
    config = mamba.MambaConfig(d_model=16, n_layers=1, d_state=8, expand_factor=2, d_conv=4, pscan=pscan)
    theirs = mamba.MambaBlock(config).eval()
    theirs.load_state_dict(block.state_dict(), strict=True)
    x = torch.randn(2, 37, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(x), theirs(x), atol=1e-5, rtol=1e-5)
        # step mode against mambapy's cache (h, last d_conv - 1 inputs)
        state = block.initial_state(2)
        cache = (None, torch.zeros(2, block.d_inner, 3))
        for t in range(5):
            y, state = block.step(x[:, t], state)
            y_theirs, cache = theirs.step(x[:, t], cache)
            torch.testing.assert_close(y, y_theirs, atol=1e-5, rtol=1e-5)
