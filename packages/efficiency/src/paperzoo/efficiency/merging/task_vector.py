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


TensorInfo = tuple[tuple[int, ...], torch.dtype]


def layout(tensors: Mapping[str, torch.Tensor]) -> dict[str, TensorInfo]:
    """{name: (shape, dtype)} of a mapping, in its order, without reading tensor data when it has a `layout`.

    A lazy mapping such as `io.LazyStateDict` carries `layout` (read from the checkpoint headers); any other mapping
    is indexed (an in-memory dict costs nothing; a lazy mapping without `layout` reads each tensor once).
    """
    known = getattr(tensors, "layout", None)
    if isinstance(known, Mapping):
        return {name: (tuple(shape), dtype) for name, (shape, dtype) in known.items()}
    return {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in tensors.items()}


def check_compatible(base: Mapping[str, torch.Tensor], models: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Raise ConfigError naming the first tensor that a model lacks, adds, or holds with another shape than the base.

    Shapes come from `layout`, so lazy inputs with a `layout` are checked without reading any tensor.
    """
    expected = layout(base)
    for index, model in enumerate(models):
        found = layout(model)
        missing = [name for name in expected if name not in found]
        if missing:
            raise ConfigError(f"Model {index} has no tensor {missing[0]!r} that the base has ({len(missing)} missing).")
        extra = [name for name in found if name not in expected]
        if extra:
            raise ConfigError(f"Model {index} has a tensor {extra[0]!r} that the base lacks ({len(extra)} extra).")
        for name, (shape, _) in expected.items():
            if found[name][0] != shape:
                raise ConfigError(
                    f"Tensor {name!r} has shape {found[name][0]} in model {index} but {shape} in the base."
                )
