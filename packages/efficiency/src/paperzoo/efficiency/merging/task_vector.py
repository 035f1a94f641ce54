"""Task vectors: the per-tensor difference between a fine-tuned model and the base it was fine-tuned from.

"Editing Models with Task Arithmetic" (Ilharco et al., arXiv:2212.04089) defines tau = theta_ft - theta_pre; TIES
(arXiv:2306.01708) and DARE (arXiv:2311.03099) sparsify and combine these. Computed one tensor at a time in float32
whatever the inputs' dtypes (fp16, bf16 and float32 can be mixed) and strides, so that no whole-model copy is held.
"""

from collections.abc import Mapping, Sequence

import torch

from paperzoo.core.errors import ConfigError

StateDict = dict[str, torch.Tensor]


def task_vector(base: torch.Tensor, model: torch.Tensor, name: str = "tensor") -> torch.Tensor:
    """delta = model - base in float32, same shape as `base`; `name` labels a shape mismatch."""
    if tuple(model.shape) != tuple(base.shape):
        raise ConfigError(
            f"Tensor {name!r} has shape {tuple(model.shape)} in a model but {tuple(base.shape)} in the base."
        )
    return model.to(device=base.device, dtype=torch.float32) - base.to(torch.float32)


def check_compatible(base: Mapping[str, torch.Tensor], models: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Raise ConfigError naming the first tensor that a model lacks, adds, or holds with another shape than the base."""
    for index, model in enumerate(models):
        missing = [name for name in base if name not in model]
        if missing:
            raise ConfigError(f"Model {index} has no tensor {missing[0]!r} that the base has ({len(missing)} missing).")
        extra = [name for name in model if name not in base]
        if extra:
            raise ConfigError(f"Model {index} has a tensor {extra[0]!r} that the base lacks ({len(extra)} extra).")
        for name, tensor in base.items():
            if tuple(model[name].shape) != tuple(tensor.shape):
                raise ConfigError(
                    f"Tensor {name!r} has shape {tuple(model[name].shape)} in model {index} but {tuple(tensor.shape)}"
                    " in the base."
                )
