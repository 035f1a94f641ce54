"""Alignment-based merging of models trained from different initialisations: hidden-unit permutations
(`permutation`), weight matching and the linear-mode-connectivity analysis of arXiv:2402.04051 (`weight_matching`),
and PLeaS's partial matching with layer-wise least squares, arXiv:2407.02447 (`pleas`)."""

from paperzoo.efficiency.merging.alignment.permutation import (
    MLP,
    ConvNet,
    PermutationSpec,
    apply_permutation,
    convnet_permutation_spec,
    identity_permutation,
    mlp_permutation_spec,
    random_permutation,
)

__all__ = [
    "MLP",
    "ConvNet",
    "PermutationSpec",
    "apply_permutation",
    "convnet_permutation_spec",
    "identity_permutation",
    "mlp_permutation_spec",
    "random_permutation",
]
