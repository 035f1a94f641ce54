"""DLinear: a decomposition followed by one linear layer per component, along time.

Zeng, Chen, Zhang & Xu, "Are Transformers Effective for Time Series Forecasting?", AAAI 2023,
https://arxiv.org/abs/2205.13504. Reference code: https://github.com/cure-lab/LTSF-Linear (models/DLinear.py).

Implemented as in the paper and the reference:
- series decomposition (Autoformer's): the trend is a moving average of width `kernel_size` (25) with stride 1 over
  the lookback window, padded at both ends by repeating the first and the last value (k - 1) / 2 times so it keeps
  length L; the seasonal (remainder) part is the window minus its trend;
- one linear layer L -> H along time on the seasonal part and one on the trend part, their outputs summed;
- `individual=True`: separate layers for each channel; otherwise one pair shared by all channels (the paper's default
  is shared). Channels never mix.

Deviations: the kernel size must be odd (the reference silently returns a trend one step short for even sizes).
No normalisation inside the model, as in DLinear (NLinear is the variant that subtracts the last value).
"""

import math

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from paperzoo.core.errors import require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.timeseries.task import ForecastingTask


class MovingAverage(nn.Module):
    """Moving average along time with replicate padding, so the output keeps the input's length.

    Args:
        kernel_size: k, odd.

    Shapes:
        x [B, L, C] -> [B, L, C]
    """

    def __init__(self, kernel_size: int = 25):
        super().__init__()
        require(
            kernel_size > 0 and kernel_size % 2 == 1,
            f"kernel_size must be a positive odd number of steps, got {kernel_size}",
        )
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = (self.kernel_size - 1) // 2
        front = x[:, :1].expand(-1, half, -1)  # [B, half, C]
        back = x[:, -1:].expand(-1, half, -1)
        padded = torch.cat([front, x, back], dim=1).transpose(1, 2)  # [B, C, L + k - 1]
        return nn.functional.avg_pool1d(padded, self.kernel_size, stride=1).transpose(1, 2)  # [B, L, C]

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


def series_decomposition(x: torch.Tensor, moving_average: MovingAverage) -> tuple[torch.Tensor, torch.Tensor]:
    """(seasonal, trend) with trend = moving average of x and seasonal = x - trend. [B, L, C] each"""
    trend = moving_average(x)
    return x - trend, trend


class TimeLinear(nn.Module):
    """A linear map L -> H along the time axis, shared by all channels or one per channel.

    Args:
        in_steps: L.
        out_steps: H.
        num_channels: C (only used when `individual`).
        individual: one (weight, bias) per channel.

    Shapes:
        x [B, L, C] -> [B, H, C]
    """

    def __init__(self, in_steps: int, out_steps: int, num_channels: int = 1, individual: bool = False):
        super().__init__()
        self.individual = individual
        channels = num_channels if individual else 1
        self.weight = nn.Parameter(torch.empty(channels, out_steps, in_steps))  # [C or 1, H, L]
        self.bias = nn.Parameter(torch.empty(channels, out_steps))  # [C or 1, H]
        bound = 1 / math.sqrt(in_steps)  # nn.Linear's default initialisation, as the reference uses
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("chl,blc->bhc", self.weight.expand(x.shape[2], -1, -1), x) + self.bias.T  # [B, H, C]


class DLinear(nn.Module):
    """DLinear: moving-average decomposition, then one linear layer along time per component.

    Args:
        context_length: L.
        prediction_length: H.
        num_channels: C.
        kernel_size: width of the moving average (25 in the paper).
        individual: one pair of linear layers per channel instead of a shared pair.

    Shapes:
        past [B, L, C] -> forecast [B, H, C]
    """

    def __init__(
        self,
        context_length: int,
        prediction_length: int,
        num_channels: int,
        kernel_size: int = 25,
        individual: bool = False,
    ):
        super().__init__()
        require(context_length > 0, f"context_length must be positive, got {context_length}")
        require(prediction_length > 0, f"prediction_length must be positive, got {prediction_length}")
        require(num_channels > 0, f"num_channels must be positive, got {num_channels}")
        self.context_length = context_length
        self.decomposition = MovingAverage(kernel_size)
        self.seasonal = TimeLinear(context_length, prediction_length, num_channels, individual)
        self.trend = TimeLinear(context_length, prediction_length, num_channels, individual)

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        require(
            past.shape[1] == self.context_length,
            f"DLinear was built for context_length {self.context_length}, got a window of {past.shape[1]} steps",
        )
        seasonal, trend = series_decomposition(past, self.decomposition)  # [B, L, C] each
        return self.seasonal(seasonal) + self.trend(trend)  # [B, H, C]


class DLinearTask(ForecastingTask):
    """DLinear trained with the MSE loss (the paper's setting).

    Args:
        num_channels, context_length, prediction_length: linked from the datamodule.
        kernel_size, individual: see `DLinear`.
        optimizer, lr_scheduler: see `BaseTask` (the configs set the learning rate; the reference
            trains with Adam at 5e-3 to 5e-4).
    """

    def __init__(
        self,
        num_channels: int = 1,
        context_length: int = 96,
        prediction_length: int = 24,
        kernel_size: int = 25,
        individual: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(num_channels, context_length, prediction_length, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = DLinear(context_length, prediction_length, num_channels, kernel_size, individual)
