"""CUDA correctness of the speech models (gpu tier: runs only where CUDA is available, on the lent GPU machine).

Each recognizer (Paraformer, AR, CTC on both encoders) and the duplex state model is built once on the CPU, copied
to the GPU, and its losses, gradients and decoded ids must equal the CPU's (float32, TF32 off).
"""

import copy

import pytest
import torch

from paperzoo.speech.asr.autoregressive import AttentionRecognizer
from paperzoo.speech.asr.ctc import CTCRecognizer
from paperzoo.speech.asr.encoder import build_encoder
from paperzoo.speech.data.tokenizer import IGNORE_ID
from paperzoo.speech.duplex.model import DuplexStateModel
from paperzoo.speech.paraformer.model import Paraformer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

FEATURES, VOCAB = 20, 12


@pytest.fixture(autouse=True)
def no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def build(name: str, encoder: str) -> torch.nn.Module:
    body = build_encoder(encoder, FEATURES, d_model=32, num_heads=4, num_layers=2, ffn_dim=64, dropout=0.0)
    if name == "ctc":
        return CTCRecognizer(body, VOCAB)
    if name == "ar":
        return AttentionRecognizer(body, VOCAB, decoder_layers=1, ffn_dim=64, dropout=0.0, ctc_weight=0.3, beam_size=3)
    # the GLM sampler and MWER draw random numbers, which differ between devices: off for an exact comparison
    return Paraformer(
        VOCAB, FEATURES, encoder=encoder, d_model=32, encoder_layers=2, decoder_layers=1, ffn_dim=64, dropout=0.0,
        sampling_ratio=0.0, ctc_weight=0.3,
    )  # fmt: skip


def batch() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 40, FEATURES, generator=generator)
    lengths = torch.tensor([40, 31, 17])
    tokens = torch.randint(3, VOCAB, (3, 6), generator=generator)
    token_lengths = torch.tensor([6, 4, 2])
    tokens[1, 4:] = tokens[2, 2:] = IGNORE_ID
    return features, lengths, tokens, token_lengths


@pytest.mark.parametrize("encoder", ["sanm", "conformer"])
@pytest.mark.parametrize("name", ["paraformer", "ar", "ctc"])
def test_recognizer_on_cuda_equals_cpu(name, encoder):
    torch.manual_seed(0)
    cpu = build(name, encoder).eval()
    gpu = copy.deepcopy(cpu).cuda()
    inputs = batch()
    losses_cpu = cpu(*inputs)
    losses_gpu = gpu(*(t.cuda() for t in inputs))
    for key, value in losses_cpu.items():
        torch.testing.assert_close(losses_gpu[key].cpu(), value, atol=1e-4, rtol=1e-4, msg=key)
    losses_cpu["loss"].backward()
    losses_gpu["loss"].backward()
    for (parameter, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        if p_cpu.grad is not None:
            torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-3, rtol=1e-3, msg=parameter)
    with torch.no_grad():
        assert gpu.decode(inputs[0].cuda(), inputs[1].cuda()) == cpu.decode(inputs[0], inputs[1])


def test_duplex_state_model_on_cuda_equals_cpu():
    torch.manual_seed(0)
    cpu = DuplexStateModel(num_features=16, dim=32, frames=4).eval()
    gpu = copy.deepcopy(cpu).cuda()
    mic, playback = torch.randn(2, 10, 4, 16) * 3, torch.randn(2, 10, 4, 16) * 3
    state = torch.randint(0, 2, (2, 10))
    logits_cpu, _ = cpu(mic, playback, state)
    logits_gpu, _ = gpu(mic.cuda(), playback.cuda(), state.cuda())
    torch.testing.assert_close(logits_gpu.cpu(), logits_cpu, atol=1e-4, rtol=1e-4)
