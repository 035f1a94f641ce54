"""Per-channel standardisation fitted on the training rows only (the Informer/Autoformer protocol).

`z = (x - mean) / scale` per channel, with the population standard deviation (ddof=0, as scikit-learn's
`StandardScaler` that the reference code uses). A constant channel (standard deviation at most `1e-8 * max(1,
|mean|)`, i.e. zero up to rounding) gets scale 1, so it becomes `x - mean` (all zeros on the training rows) instead of
a division by zero; this is what scikit-learn does for zero variance too.
"""

from dataclasses import dataclass

import numpy as np
import torch

from paperzoo.core.errors import DataError

Array = np.ndarray | torch.Tensor

CONSTANT_TOLERANCE = 1e-8


@dataclass
class StandardScaler:
    """Per-channel mean and scale; works on numpy arrays and torch tensors shaped [..., C].

    Attributes:
        mean: [C] float64.
        scale: [C] float64, 1.0 for constant channels.
        constant: [C] bool, the channels whose scale was set to 1.
    """

    mean: np.ndarray
    scale: np.ndarray
    constant: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "StandardScaler":
        """Statistics of the training rows `values` [T, C] (no NaN)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] == 0:
            raise DataError(f"the scaler is fitted on a [T, C] array with T > 0, got shape {values.shape}")
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        constant = std <= CONSTANT_TOLERANCE * np.maximum(1.0, np.abs(mean))
        return cls(mean=mean, scale=np.where(constant, 1.0, std), constant=constant)

    @classmethod
    def identity(cls, num_channels: int) -> "StandardScaler":
        """A scaler that leaves values unchanged (`scale=False`)."""
        return cls(np.zeros(num_channels), np.ones(num_channels), np.zeros(num_channels, dtype=bool))

    @property
    def num_channels(self) -> int:
        return len(self.mean)

    def _stats(self, x: Array) -> tuple[Array, Array]:
        if x.shape[-1] != self.num_channels:
            raise DataError(f"the scaler has {self.num_channels} channels, got an input of shape {tuple(x.shape)}")
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(self.mean, dtype=x.dtype, device=x.device),
                torch.as_tensor(self.scale, dtype=x.dtype, device=x.device),
            )
        return self.mean, self.scale

    def transform(self, x: Array) -> Array:
        """[..., C] -> standardised [..., C] (same type, dtype and device)."""
        mean, scale = self._stats(x)
        if isinstance(x, torch.Tensor):
            return (x - mean) / scale
        return ((x - mean) / scale).astype(np.result_type(x, np.float32), copy=False)

    def inverse_transform(self, z: Array) -> Array:
        """Standardised [..., C] -> original units [..., C]."""
        mean, scale = self._stats(z)
        if isinstance(z, torch.Tensor):
            return z * scale + mean
        return (z * scale + mean).astype(np.result_type(z, np.float32), copy=False)
