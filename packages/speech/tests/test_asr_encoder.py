"""The SAN-M and conformer encoders and the shared decoder stack: the memory block against a naive loop, padding
invariance, FunASR's position table, causal incremental decoding equal to the full pass."""

import math

import pytest
import torch

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError
from paperzoo.speech.asr.decoder_layers import TransformerDecoder
from paperzoo.speech.asr.encoder import SANMAttention, build_encoder
from paperzoo.speech.asr.layers import lengths_to_mask, sinusoidal_encoding


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: a second spinning OpenMP thread made these steps 20x slower."""
    with torch_threads(1):
        yield


def test_sinusoidal_encoding_is_funasrs_table():
    table = sinusoidal_encoding(3, 6)  # positions 1, 2, 3; w_i = 10000^(-i/2), i = 0, 1, 2
    for p in range(3):
        for i in range(3):
            w = 10000.0 ** (-i / 2)
            assert table[p, i].item() == pytest.approx(math.sin((p + 1) * w), abs=1e-6)
            assert table[p, 3 + i].item() == pytest.approx(math.cos((p + 1) * w), abs=1e-6)


@pytest.mark.parametrize(("kernel_size", "shift"), [(11, 0), (4, 0), (5, 2)])
def test_memory_block_is_a_padded_depthwise_convolution_plus_values(kernel_size, shift):
    torch.manual_seed(0)
    attention = SANMAttention(8, 8, 2, kernel_size=kernel_size, shift=shift).eval()
    values = torch.randn(2, 9, 8)
    mask = lengths_to_mask(torch.tensor([9, 6]))
    got = attention.memory(values, mask)
    weight = attention.fsmn.weight[:, 0, :]  # [D, k]
    left = (kernel_size - 1) // 2 + shift
    masked = values * mask[..., None]
    expected = torch.zeros_like(values)
    for b in range(2):
        for t in range(9):
            if not mask[b, t]:
                continue
            acc = masked[b, t].clone()
            for j in range(kernel_size):
                source = t - left + j
                if 0 <= source < 9:
                    acc += weight[:, j] * masked[b, source]
            expected[b, t] = acc
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sanm_output_is_attention_plus_memory():
    torch.manual_seed(0)
    attention = SANMAttention(6, 8, 2, kernel_size=3).eval()
    x = torch.randn(1, 5, 6)
    mask = torch.ones(1, 5, dtype=torch.bool)
    q, k, v = attention.qkv(x).chunk(3, dim=-1)
    heads = [t.view(1, 5, 2, 4).transpose(1, 2) for t in (q, k, v)]
    probs = torch.softmax(heads[0] @ heads[1].transpose(-1, -2) / 2.0, dim=-1)
    attended = attention.out((probs @ heads[2]).transpose(1, 2).reshape(1, 5, 8))
    torch.testing.assert_close(attention(x, mask), attended + attention.memory(v, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["sanm", "conformer"])
def test_encoder_shapes_and_gradients(kind):
    torch.manual_seed(0)
    encoder = build_encoder(kind, input_dim=12, d_model=16, num_heads=2, num_layers=2, ffn_dim=32)
    x, lengths = torch.randn(3, 10, 12), torch.tensor([10, 7, 3])
    h, out_lengths = encoder(x, lengths)
    assert h.shape == (3, 10, 16) and encoder.output_dim == 16
    assert torch.equal(out_lengths, lengths)
    assert torch.all(h[1, 7:] == 0) and torch.all(h[2, 3:] == 0)
    h.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in encoder.parameters())


@pytest.mark.parametrize("kind", ["sanm", "conformer"])
def test_encoder_ignores_padding(kind):
    torch.manual_seed(0)
    encoder = build_encoder(kind, 12, d_model=16, num_heads=2, num_layers=2, ffn_dim=32, kernel_size=5).eval()
    long, short = torch.randn(1, 10, 12), torch.randn(1, 6, 12)
    batch = torch.zeros(2, 10, 12)
    batch[0], batch[1, :6] = long[0], short[0]
    batch[1, 6:] = 5.0  # garbage in the padding must not leak into valid frames
    h, _ = encoder(batch, torch.tensor([10, 6]))
    alone, _ = encoder(short, torch.tensor([6]))
    torch.testing.assert_close(h[1, :6], alone[0], atol=1e-5, rtol=1e-5)


def test_sanm_memory_block_gives_positions_without_attention():
    """The memory block is what makes SAN-M order-aware beyond the input encoding: reversing the frames of the input
    changes the output by more than the reversal."""
    torch.manual_seed(0)
    attention = SANMAttention(8, 8, 2, kernel_size=3).eval()
    with torch.no_grad():
        attention.fsmn.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).expand(8, 1, 3))
    x = torch.randn(1, 5, 8)
    mask = torch.ones(1, 5, dtype=torch.bool)
    forward = attention(x, mask)
    backward = attention(x.flip(1), mask).flip(1)
    assert not torch.allclose(forward, backward, atol=1e-4)


def test_build_encoder_rejects_unknown_kind_and_bad_sizes():
    with pytest.raises(ConfigError, match="transformer"):
        build_encoder("transformer", input_dim=8)
    with pytest.raises(ConfigError, match="heads"):
        build_encoder("sanm", input_dim=8, d_model=10, num_heads=3)
    with pytest.raises(ConfigError, match="odd"):
        build_encoder("conformer", input_dim=8, d_model=8, num_heads=2, kernel_size=4)


def test_causal_decoder_step_equals_full_pass_and_ignores_memory_padding():
    torch.manual_seed(0)
    decoder = TransformerDecoder(d_model=16, num_heads=2, num_layers=2, ffn_dim=32).eval()
    x = torch.randn(2, 5, 16)
    memory = torch.randn(2, 7, 16)
    memory_lengths = torch.tensor([7, 4])
    full = decoder(x, memory, memory_lengths)
    state = decoder.init_state(memory, memory_lengths)
    first, state = decoder.step(x[:, :2], state)  # a chunk of 2, then one by one
    steps = [first]
    for i in range(2, 5):
        y, state = decoder.step(x[:, i : i + 1], state)
        steps.append(y)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    # causal: changing a later input leaves earlier outputs alone
    changed = x.clone()
    changed[:, 3] = torch.randn(2, 16)
    torch.testing.assert_close(decoder(changed, memory, memory_lengths)[:, :3], full[:, :3])
    # memory padding is invisible
    padded = memory.clone()
    padded[1, 4:] = 100.0
    torch.testing.assert_close(decoder(x, padded, memory_lengths)[1], full[1])
    # reordering the state reorders the batch
    state = decoder.init_state(memory, memory_lengths).select(torch.tensor([1, 1, 0]))
    y, _ = decoder.step(x[[1, 1, 0], :3], state)
    torch.testing.assert_close(y, full[[1, 1, 0], :3], atol=1e-5, rtol=1e-5)


def test_non_causal_decoder_sees_the_future_but_not_padding():
    torch.manual_seed(0)
    decoder = TransformerDecoder(d_model=16, num_heads=2, num_layers=1, ffn_dim=32, causal=False).eval()
    x, memory, memory_lengths = torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.tensor([7, 7])
    x_lengths = torch.tensor([5, 3])
    full = decoder(x, memory, memory_lengths, x_lengths)
    changed = x.clone()
    changed[0, 4] = torch.randn(16)  # (a constant shift would vanish in the LayerNorm)
    assert not torch.allclose(decoder(changed, memory, memory_lengths, x_lengths)[0, :4], full[0, :4])
    changed = x.clone()
    changed[1, 3:] = 100.0  # padded decoder positions are hidden as keys
    torch.testing.assert_close(decoder(changed, memory, memory_lengths, x_lengths)[1, :3], full[1, :3])
    # the causal override
    assert not torch.allclose(decoder(x, memory, memory_lengths, causal=True), decoder(x, memory, memory_lengths))
