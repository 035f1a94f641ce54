"""The token-mixer interface shared by every long-sequence model (paper 110's unified view).

"A Unified View of Long-Sequence Models towards Modeling Million-Scale Dependencies" (arXiv:2302.06218) writes every
sequence layer as a token mixing y_i = sum_j M_ij(x) V x_j: softmax and linear attention, long convolutions
(Toeplitz M), state-space models and RNNs (semi-separable M). `TokenMixer` makes that template executable:

- `forward(x)` is the fast path a model trains with (FFT convolution, a scan, SDPA);
- `values(x)` is V x, what gets mixed, `mixing_matrix(x)` is M, and `readout(x, mixed)` is what the layer does after
  mixing (gating, skip terms, the output projection), so that
  `readout(x, einsum("bcij,bjc->bic", mixing_matrix(x), values(x)))` reproduces `forward(x)` at small L, which is
  how the tests check every mixer against its own definition;
- `step(x_t, state)` is the recurrent mode for generation, where the paper has one.

Mixers register by name (`@register_mixer("s4d")`) so configs pick them with `mixer: s4d` plus `mixer_args`; the
built-in ones are imported on first use from `BUILTIN_MIXERS`.
Shapes: B = batch, L = length, D = model width, C = mixed channels (D, the inner width, or heads x head width).
"""

import abc
import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from paperzoo.core.errors import ConfigError

MixerState = Any

_MIXERS: dict[str, type["TokenMixer"]] = {}

#: name -> the module that registers it, imported when the name is first asked for.
BUILTIN_MIXERS = {
    "attention": "paperzoo.efficiency.sequence.attention",
    "linear_attention": "paperzoo.efficiency.sequence.linear_attention",
    "s4": "paperzoo.efficiency.sequence.s4.model",
    "s4d": "paperzoo.efficiency.sequence.s4d.model",
    "mamba": "paperzoo.efficiency.sequence.mamba.block",
    "sgconv": "paperzoo.efficiency.sequence.sgconv.model",
}


class TokenMixer(nn.Module, abc.ABC):
    """A layer that mixes information along the sequence: [B, L, D] -> [B, L, D].

    Subclasses take the model width `dim` as their first argument, and set `causal` (True when y_i depends only on
    x_{<=i}; `step` requires it).
    """

    causal: bool = True

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D] -> [B, L, D], the training path."""

    # --- the materialised view, for tests at small L ------------------------------------------------------------
    @abc.abstractmethod
    def values(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D] -> V x: [B, L, C], the per-position values that M mixes."""

    @abc.abstractmethod
    def mixing_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D] -> M: [B, C, L, L] with M[b, c, i, j] the weight of value j in output i for channel c."""

    @abc.abstractmethod
    def readout(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D], mixed = M V x: [B, L, C] -> the layer output [B, L, D]."""

    def forward_materialized(self, x: torch.Tensor) -> torch.Tensor:
        """The layer computed through its explicit L x L mixing matrix: equals `forward(x)`. x: [B, L, D]."""
        mixed = torch.einsum("bcij,bjc->bic", self.mixing_matrix(x), self.values(x))
        return self.readout(x, mixed)

    # --- recurrent mode -----------------------------------------------------------------------------------------
    supports_step: bool = False

    def initial_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        """The state before the first token of a step-mode run."""
        raise NotImplementedError(f"{type(self).__name__} has no recurrent mode")

    def step(self, x: torch.Tensor, state: MixerState) -> tuple[torch.Tensor, MixerState]:
        """One token: x: [B, D] and the state -> (y: [B, D], new state). Equals `forward` position by position."""
        raise NotImplementedError(f"{type(self).__name__} has no recurrent mode")


def register_mixer(name: str) -> Callable[[type[TokenMixer]], type[TokenMixer]]:
    """Class decorator: make a mixer available to configs as `mixer: <name>`."""

    def register(cls: type[TokenMixer]) -> type[TokenMixer]:
        if name in _MIXERS and _MIXERS[name] is not cls:
            raise ValueError(f"token mixer name {name!r} is taken by {_MIXERS[name].__qualname__}")
        _MIXERS[name] = cls
        return cls

    return register


def mixer_names() -> list[str]:
    """Every mixer name a config may use: the built-in ones and any registered since."""
    return sorted(set(_MIXERS) | set(BUILTIN_MIXERS))


def build_mixer(name: str, dim: int, **kwargs: Any) -> TokenMixer:
    """Build the mixer registered as `name` with width `dim`; an unknown name lists the known ones."""
    if name not in _MIXERS and name in BUILTIN_MIXERS:
        importlib.import_module(BUILTIN_MIXERS[name])
    if name not in _MIXERS:
        raise ConfigError(f"unknown token mixer {name!r}; expected one of: {', '.join(mixer_names())}")
    return _MIXERS[name](dim, **kwargs)
