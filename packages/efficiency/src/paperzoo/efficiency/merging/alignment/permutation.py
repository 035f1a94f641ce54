"""Hidden-unit permutations of a network's state dict: which axes of which tensors each permutation acts on.

A hidden layer's units can be reordered without changing the function: permute the rows (axis 0) of the layer's
weight and bias, and the columns (axis 1) of the next layer's weight, by the same permutation. A
`PermutationSpec` names each such permutation and lists the (tensor, axis) pairs it acts on, as in git re-basin
(Ainsworth et al., "Git Re-Basin: Merging Models modulo Permutation Symmetries", arXiv:2209.04836); weight matching
(`weight_matching.py`) and PLeaS (`pleas.py`) search over these permutations.

Convention: a permutation `perm` of length n applied along an axis gives `new[i] = old[perm[i]]` (torch's
`index_select`), so `perm[i]` is the unit of the permuted model that lands at position i.

Implemented: the spec of a plain ReLU MLP (`MLP`, `mlp_permutation_spec`) and of a small ReLU conv net
(`ConvNet`, `convnet_permutation_spec`: conv channels, then flattened spatial positions times channels into the
first linear layer), applying permutations to a state dict without mutating it, identity and random permutations.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from paperzoo.core.errors import ConfigError, require
from paperzoo.efficiency.merging.task_vector import StateDict

__all__ = [
    "MLP",
    "ConvNet",
    "Permutation",
    "PermutationSpec",
    "apply_permutation",
    "compose",
    "convnet_permutation_spec",
    "identity_permutation",
    "inverse",
    "mlp_permutation_spec",
    "permutation_sizes",
    "random_permutation",
]

Permutation = dict[str, Tensor]  # permutation name -> int64 index tensor [n]


@dataclass(frozen=True)
class PermutationSpec:
    """Which (tensor name, axis) pairs each named hidden permutation acts on.

    Args:
        perm_to_axes: permutation name -> the (tensor, axis) pairs it reorders. An axis of a flattened conv output
            (channels x positions feeding a linear layer) is given as `(name, axis, group)`: the axis holds `group`
            consecutive entries per unit, moved together.
    """

    perm_to_axes: Mapping[str, tuple[tuple[str, int, int], ...]]
    axes_to_perm: dict[str, dict[int, tuple[str, int]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        table: dict[str, dict[int, tuple[str, int]]] = {}
        for name, axes in self.perm_to_axes.items():
            for key, axis, group in axes:
                require(group >= 1, f"group {group} of {key!r} axis {axis} must be >= 1")
                if axis in table.setdefault(key, {}):
                    raise ConfigError(f"axis {axis} of {key!r} is claimed by both {table[key][axis][0]!r} and {name!r}")
                table[key][axis] = (name, group)
        object.__setattr__(self, "axes_to_perm", table)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.perm_to_axes)


def _axes(*pairs: tuple[str, int]) -> tuple[tuple[str, int, int], ...]:
    return tuple((key, axis, 1) for key, axis in pairs)


def permutation_sizes(spec: PermutationSpec, state: Mapping[str, Tensor]) -> dict[str, int]:
    """The number of units of each permutation, read from the first tensor it acts on."""
    sizes = {}
    for name, axes in spec.perm_to_axes.items():
        key, axis, group = axes[0]
        require(key in state, f"tensor {key!r} of permutation {name!r} is missing from the state dict")
        sizes[name] = state[key].shape[axis] // group
    return sizes


def identity_permutation(spec: PermutationSpec, state: Mapping[str, Tensor]) -> Permutation:
    return {name: torch.arange(n) for name, n in permutation_sizes(spec, state).items()}


def random_permutation(spec: PermutationSpec, state: Mapping[str, Tensor], seed: int = 0) -> Permutation:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(n, generator=generator) for name, n in permutation_sizes(spec, state).items()}


def inverse(perm: Permutation) -> Permutation:
    """The permutations undoing `perm`: `apply(apply(s, p), inverse(p)) == s`."""
    return {name: torch.argsort(p) for name, p in perm.items()}


def compose(first: Permutation, second: Permutation) -> Permutation:
    """Applying `first` then `second` equals applying `compose(first, second)` once."""
    return {name: first[name][second[name]] for name in first}


def _expand(perm: Tensor, group: int) -> Tensor:
    """Unit permutation -> permutation of an axis holding `group` consecutive entries per unit."""
    if group == 1:
        return perm
    return (perm[:, None] * group + torch.arange(group)).reshape(-1)  # [n * group]


def permute_tensor(
    spec: PermutationSpec, perm: Permutation, key: str, tensor: Tensor, except_axis: int | None = None
) -> Tensor:
    """`tensor` (the state's entry `key`) with every spec axis permuted, except `except_axis` (weight matching
    leaves out the axis being solved for)."""
    out = tensor
    for axis, (name, group) in spec.axes_to_perm.get(key, {}).items():
        if axis == except_axis:
            continue
        index = _expand(perm[name], group).to(tensor.device)
        if index.numel() != tensor.shape[axis]:
            raise ConfigError(
                f"permutation {name!r} of {index.numel() // group} units does not fit axis {axis} of {key!r} "
                f"(size {tensor.shape[axis]})"
            )
        out = out.index_select(axis, index)
    return out


def apply_permutation(spec: PermutationSpec, perm: Permutation, state: Mapping[str, Tensor]) -> StateDict:
    """A new state dict with every permuted axis reordered (`new[i] = old[perm[i]]`); tensors the spec does not
    touch are cloned, so the input is never mutated or aliased."""
    missing = set(spec.names) - set(perm)
    require(not missing, f"permutations {sorted(missing)} are missing; the spec has {list(spec.names)}")
    out = {}
    for key, tensor in state.items():
        permuted = permute_tensor(spec, perm, key, tensor)
        out[key] = permuted.clone() if permuted is tensor else permuted
    return out


class MLP(nn.Module):
    """A plain ReLU MLP on flattened inputs: `hidden.{i}` Linear layers, each followed by ReLU, then `head`.

    Args:
        in_features: input size (a [N, 1, 28, 28] image is flattened to 784).
        widths: the hidden layers' widths.
        num_classes: the head's outputs.
    """

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        require(len(widths) >= 1, f"widths {list(widths)} must name at least one hidden layer")
        sizes = [in_features, *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.head = nn.Linear(sizes[-1], num_classes)

    def features(self, x: Tensor) -> Tensor:
        h = x.flatten(1)  # [N, D]
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return h  # [N, widths[-1]]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # [N, C]

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor]) -> "MLP":
        """An MLP shaped like `state` (hidden widths and head size read from its tensors), loaded with it."""
        count = sum(1 for key in state if key.startswith("hidden.") and key.endswith(".weight"))
        widths = [state[f"hidden.{i}.weight"].shape[0] for i in range(count)]
        model = cls(state["hidden.0.weight"].shape[1], widths, state["head.weight"].shape[0])
        model.to(state["head.weight"].dtype)  # a float64 state gives a float64 model (exactness tests)
        model.load_state_dict(dict(state))
        return model.eval()


def mlp_permutation_spec(num_hidden: int, head: str | Sequence[str] = "head") -> PermutationSpec:
    """The spec of `MLP` with `num_hidden` hidden layers: permutation `P{i}` reorders the units of `hidden.{i}`
    (its weight's rows and bias) and the inputs of the next layer (the next hidden weight's columns, or each head's
    weight columns; several heads share the last hidden layer)."""
    heads = (head,) if isinstance(head, str) else tuple(head)
    perms = {}
    for i in range(num_hidden):
        nxt = ((f"hidden.{i + 1}.weight", 1),) if i + 1 < num_hidden else tuple((f"{h}.weight", 1) for h in heads)
        perms[f"P{i}"] = _axes((f"hidden.{i}.weight", 0), (f"hidden.{i}.bias", 0), *nxt)
    return PermutationSpec(perms)


class ConvNet(nn.Module):
    """A small ReLU conv net: `conv.{i}` 3x3 convolutions (stride 2, padding 1) with ReLU, flattened, then
    `hidden.{j}` Linear layers with ReLU, then `head`. No normalisation layers, so permutations act on weights and
    biases only.

    Args:
        channels: the conv layers' output channels.
        widths: the linear hidden layers' widths.
        num_classes: the head's outputs.
        in_channels, image_size: the input's channels and (square) size.
    """

    def __init__(
        self,
        channels: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        require(len(channels) >= 1 and len(widths) >= 1, "ConvNet needs at least one conv and one hidden layer")
        sizes = [in_channels, *channels]
        self.conv = nn.ModuleList(
            nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        side = image_size
        for _ in channels:
            side = (side + 1) // 2
        self.positions = side * side
        dims = [channels[-1] * self.positions, *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.head = nn.Linear(dims[-1], num_classes)

    def features(self, x: Tensor) -> Tensor:
        h = x
        for conv in self.conv:
            h = torch.relu(conv(h))  # [N, C, H, W]
        h = h.flatten(1)  # [N, C * H * W]: channel-major, so each channel is `positions` consecutive entries
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def convnet_permutation_spec(num_conv: int, num_hidden: int, positions: int) -> PermutationSpec:
    """The spec of `ConvNet`: `C{i}` reorders conv i's output channels (weight axis 0, bias, and the next conv's
    input channels, axis 1; the last conv's channels enter `hidden.0` as `positions` consecutive columns each),
    `P{j}` reorders hidden layer j as in `mlp_permutation_spec`."""
    perms: dict[str, tuple[tuple[str, int, int], ...]] = {}
    for i in range(num_conv):
        own = ((f"conv.{i}.weight", 0, 1), (f"conv.{i}.bias", 0, 1))
        nxt = ((f"conv.{i + 1}.weight", 1, 1),) if i + 1 < num_conv else (("hidden.0.weight", 1, positions),)
        perms[f"C{i}"] = own + nxt
    for name, axes in mlp_permutation_spec(num_hidden).perm_to_axes.items():
        perms[name] = axes
    return PermutationSpec(perms)
