from pathlib import Path

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.core.lm.gpt import GPT, gpt_1m, gpt_10m, gpt_100k, gpt_100m
from paperzoo.core.testing.golden import assert_golden

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(
    ("builder", "low", "high"),
    [(gpt_100k, 80e3, 120e3), (gpt_1m, 0.8e6, 1.2e6), (gpt_10m, 8e6, 12e6), (gpt_100m, 85e6, 115e6)],
)
def test_builders_span_100k_to_100m(builder, low, high):
    with torch.device("meta"):
        model = builder()
    assert low <= model.num_parameters() <= high


def test_parameter_count_by_hand():
    # embedding V*D (tied head) + per block: qkv 3D^2 + out D^2 + SwiGLU 3*D*H + 2 norms 2D, final norm D
    model = GPT(vocab_size=10, dim=8, n_layers=2, n_heads=2, max_seq_len=4)
    hidden = 32  # swiglu_hidden_dim(8) rounds 21 up to 32
    assert model.num_parameters() == 10 * 8 + 2 * (4 * 64 + 3 * 8 * hidden + 2 * 8) + 8


def test_head_is_tied_and_shapes():
    model = gpt_100k(max_seq_len=32)
    assert model.head.weight is model.embed.weight
    assert model(torch.randint(0, 257, (2, 32))).shape == (2, 32, 257)


def test_rejects_too_long_input():
    with pytest.raises(ConfigError, match="exceeds max_seq_len 8"):
        GPT(vocab_size=5, dim=8, n_layers=1, n_heads=2, max_seq_len=8)(torch.zeros(1, 9, dtype=torch.long))


def test_golden_logits_on_fixed_init():
    torch.manual_seed(0)
    model = GPT(vocab_size=11, dim=16, n_layers=2, n_heads=2, max_seq_len=8).eval()
    tokens = torch.arange(8).remainder(11)[None]
    assert_golden(GOLDEN / "gpt_logits.json", model(tokens)[0, :, :4])
