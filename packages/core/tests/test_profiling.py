"""`paperzoo.core.profiling`: saved-activation bytes on a hand-counted graph."""

import torch
from torch import nn

from paperzoo.core.profiling import device_name, saved_activation_bytes, synchronize


def test_saved_activation_bytes_counts_saved_tensors_but_not_parameters():
    model = nn.Linear(4, 3, bias=False)
    x = torch.randn(2, 4)
    # autograd saves x [2, 4] for the weight's gradient (32 bytes) and y [2, 3] for y ** 2 (24 bytes)
    assert saved_activation_bytes(model, lambda: (model(x) ** 2).sum()) == 56
    assert model.weight.grad is None  # gradients are cleared after the measurement


def test_shared_storage_counts_once():
    model = nn.Linear(4, 4, bias=False)
    x = torch.randn(2, 4)

    def loss() -> torch.Tensor:
        y = model(x)
        return (y * y).sum()  # saves y twice, one storage of 32 bytes

    assert saved_activation_bytes(model, loss) == 32 + 32  # y once, and x


def test_cpu_device_name_names_the_threads():
    synchronize(torch.device("cpu"))
    assert "thread" in device_name(torch.device("cpu"))
