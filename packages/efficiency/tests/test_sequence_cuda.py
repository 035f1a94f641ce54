"""CUDA correctness of every token mixer (gpu tier: runs only where CUDA is available, on the lent GPU machine).

Each mixer configuration of the unified-view check is built once, copied to the GPU, and its forward pass and
gradients must equal the CPU's (float32, TF32 off so both sides do the same arithmetic).
"""

import copy

import pytest
import torch

from paperzoo.efficiency.sequence.mixer import build_mixer
from paperzoo.efficiency.sequence.unified.check import VARIANTS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(autouse=True)
def no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.label)
@pytest.mark.parametrize("length", [1, 33, 64])
def test_mixer_on_cuda_equals_cpu(variant, length):
    torch.manual_seed(0)
    cpu = build_mixer(variant.name, 16, **variant.args)
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(2, length, 16)
    x_gpu = x.cuda().requires_grad_()
    x.requires_grad_()
    y_cpu, y_gpu = cpu(x), gpu(x_gpu)
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-4, rtol=1e-4)
    weights = torch.randn_like(y_cpu)
    (y_cpu * weights).sum().backward()
    (y_gpu * weights.cuda()).sum().backward()
    torch.testing.assert_close(x_gpu.grad.cpu(), x.grad, atol=1e-4, rtol=1e-4)
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        if p_cpu.grad is not None:
            torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-3, rtol=1e-3, msg=name)
