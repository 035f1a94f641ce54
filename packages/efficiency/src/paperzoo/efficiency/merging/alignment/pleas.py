"""PLeaS: merging two models from different initialisations with partial permutations and least squares.

Paper: Nasery, Hayase, Koh and Oh, "PLeaS -- Merging Models with Permutations and Least Squares",
https://arxiv.org/abs/2407.02447; reference code SewoongLab/PLeaS-Merging (read for facts).

Implemented, for two `MLP`s of one architecture (hidden widths n_l) with their own heads (label spaces may differ):
- Step 1, partial activation matching (`activation_correlation`, `partial_match`): per hidden layer, the Pearson
  correlation of the two models' post-ReLU features on data, a one-to-one matching by the Hungarian algorithm
  (`scipy.optimize.linear_sum_assignment`, maximising total correlation), and of the n matched pairs only the
  `num_merged` most correlated are merged; every other unit is kept from both models. The merged layer has
  2 n - num_merged units, laid out [merged pairs; A-only; B-only], so its width lands anywhere in [n, 2n]
  (`num_merged_for_width`, `merged_width`).
- Step 2, layer-wise least squares (`pleas_merge`): layer by layer from the input, the merged weights minimise
  ||[X_merged, 1] [W, b]^T - T||^2 on the data, where X_merged are the merged network's own features entering the
  layer and T the source models' pre-activations in the merged layout ([(z_A + z_B) / 2 for merged pairs; z_A of
  A-only units; z_B of B-only units]). As in the reference's gradient mask, A-only outputs read no B-only input
  and vice versa (`masked_least_squares` solves each block of rows over its allowed columns). Each model keeps a
  head, fitted the same way to its own logits from the merged features (merged + its own units).
- Baselines: `zip_merge` builds the merged weights directly from the matching without data (merged rows average
  A's row and B's matched row; unmerged rows are copied; with every unit merged it is git re-basin's
  permutation-then-average, with identity matches plain weight averaging, with nothing merged the exact
  concatenation of both models).

Deviations: the paper solves the least squares by gradient descent on the layer-wise objective of ResNets and ViTs
(the reference trains with Adam under a gradient mask) and also offers a data-free variant; here each layer's
problem is solved in closed form in float64 (`torch.linalg.lstsq`, or ridge-regularised normal equations), for
MLPs. The reference feeds each layer the source models' features in the merged layout; `inputs="sources"` does that,
the default `inputs="merged"` feeds the merged network's own features, so each layer's solve also corrects
the error of the layers below it.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from paperzoo.core.errors import ConfigError, require
from paperzoo.efficiency.merging.alignment.permutation import MLP
from paperzoo.efficiency.merging.task_vector import StateDict

__all__ = [
    "LayerMatch",
    "MergedModel",
    "activation_correlation",
    "identity_matches",
    "masked_least_squares",
    "match_layers",
    "merged_width",
    "mlp_activations",
    "num_merged_for_width",
    "partial_match",
    "pleas_merge",
    "zip_merge",
]


@dataclass(frozen=True)
class LayerMatch:
    """How one hidden layer's units of A and B land in the merged layer, laid out [merged; A-only; B-only].

    Args:
        merged_a, merged_b: the matched pairs that are merged (unit merged_a[i] of A with merged_b[i] of B), most
            correlated first.
        only_a, only_b: the units kept separately from A and from B.
        correlation: the merged pairs' correlations (for reporting).
    """

    merged_a: Tensor
    merged_b: Tensor
    only_a: Tensor
    only_b: Tensor
    correlation: Tensor

    @property
    def width(self) -> int:
        return len(self.merged_a) + len(self.only_a) + len(self.only_b)

    @property
    def num_merged(self) -> int:
        return len(self.merged_a)


def merged_width(n: int, num_merged: int) -> int:
    """Units of a merged layer: num_merged pairs plus n - num_merged units from each model."""
    require(0 <= num_merged <= n, f"num_merged {num_merged} must lie in [0, {n}]")
    return 2 * n - num_merged


def num_merged_for_width(n: int, width_ratio: float) -> int:
    """The number of merged pairs that gives a layer of about width_ratio * n units (width_ratio in [1, 2])."""
    require(1.0 <= width_ratio <= 2.0, f"width_ratio {width_ratio} must lie in [1, 2] (merged width n .. 2n)")
    return n - round((width_ratio - 1.0) * n)


def activation_correlation(features_a: Tensor, features_b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation corr[i, j] between unit i of A and unit j of B over the N samples.

    Args:
        features_a: [N, n]; features_b: [N, m]. A unit constant on the data (e.g. a dead ReLU) correlates 0.

    Returns:
        [n, m] float64.
    """
    require(features_a.shape[0] == features_b.shape[0], "both feature matrices need the same samples (rows)")
    a = features_a.double() - features_a.double().mean(0)
    b = features_b.double() - features_b.double().mean(0)
    a = a / (a.norm(dim=0) + eps)
    b = b / (b.norm(dim=0) + eps)
    return a.T @ b


def partial_match(correlation: Tensor, num_merged: int) -> LayerMatch:
    """Hungarian matching of A's units to B's (maximum total correlation), merging the `num_merged` best pairs.

    Args:
        correlation: [n, n] from `activation_correlation`.
        num_merged: how many matched pairs to merge (0: keep all units of both; n: merge every pair).
    """
    n = correlation.shape[0]
    require(correlation.shape == (n, n), f"correlation must be square, got {tuple(correlation.shape)}")
    require(0 <= num_merged <= n, f"num_merged {num_merged} must lie in [0, {n}]")
    rows, cols = linear_sum_assignment(correlation.numpy(), maximize=True)
    rows_t, cols_t = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
    scores = correlation[rows_t, cols_t]
    order = torch.argsort(scores, descending=True, stable=True)
    keep, rest = order[:num_merged], order[num_merged:]
    return LayerMatch(
        merged_a=rows_t[keep],
        merged_b=cols_t[keep],
        only_a=torch.sort(rows_t[rest]).values,
        only_b=torch.sort(cols_t[rest]).values,
        correlation=scores[keep],
    )


def identity_matches(widths: Sequence[int]) -> list[LayerMatch]:
    """Every unit i of A merged with unit i of B (no alignment: `zip_merge` then gives plain weight averaging)."""
    empty = torch.zeros(0, dtype=torch.int64)
    return [LayerMatch(torch.arange(n), torch.arange(n), empty, empty, torch.ones(n)) for n in widths]


def _hidden_count(state: Mapping[str, Tensor]) -> int:
    return sum(1 for key in state if key.startswith("hidden.") and key.endswith(".weight"))


def mlp_activations(state: Mapping[str, Tensor], x: Tensor) -> tuple[list[Tensor], Tensor]:
    """The pre-activations of every hidden layer ([N, n_l] each) and the logits [N, C] of the MLP `state` on x."""
    model = MLP.from_state(state)
    pre = []
    h = x.flatten(1)
    with torch.no_grad():
        for layer in model.hidden:
            z = layer(h)
            pre.append(z)
            h = torch.relu(z)
        logits = model.head(h)
    return pre, logits


def match_layers(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], x: Tensor, num_merged: int | Sequence[int]
) -> list[LayerMatch]:
    """`partial_match` of every hidden layer of the MLPs a and b on the post-ReLU features of data x."""
    pre_a, _ = mlp_activations(a, x)
    pre_b, _ = mlp_activations(b, x)
    require(
        [z.shape[1] for z in pre_a] == [z.shape[1] for z in pre_b],
        f"hidden widths differ: {[z.shape[1] for z in pre_a]} vs {[z.shape[1] for z in pre_b]}",
    )
    counts = [num_merged] * len(pre_a) if isinstance(num_merged, int) else list(num_merged)
    require(len(counts) == len(pre_a), f"num_merged has {len(counts)} entries for {len(pre_a)} hidden layers")
    return [
        partial_match(activation_correlation(torch.relu(za), torch.relu(zb)), k)
        for za, zb, k in zip(pre_a, pre_b, counts, strict=True)
    ]


def masked_least_squares(
    inputs: Tensor, targets: Tensor, blocks: Sequence[tuple[Tensor, Tensor]], ridge: float = 0.0
) -> tuple[Tensor, Tensor]:
    """W, b minimising ||inputs W^T + b - targets||^2 where output rows of each block read only its columns.

    Args:
        inputs: [N, d]; targets: [N, m].
        blocks: (output rows, allowed input columns) pairs covering every output row once; the weights outside a
            block's columns stay 0. Every row has a bias.
        ridge: 0 for the exact minimum-norm solution (`torch.linalg.lstsq`, gelsd); > 0 adds ridge * (the mean
            diagonal of X^T X) to the normal equations' diagonal (the bias column unpenalised), scale-free.

    Returns:
        W [m, d] and b [m], float64.
    """
    require(inputs.shape[0] == targets.shape[0], f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}")
    require(ridge >= 0.0, f"ridge {ridge} must be >= 0")
    x = inputs.double()
    y = targets.double()
    n, d = x.shape
    weight = torch.zeros(y.shape[1], d, dtype=torch.float64)
    bias = torch.zeros(y.shape[1], dtype=torch.float64)
    covered = torch.zeros(y.shape[1], dtype=torch.bool)
    ones = torch.ones(n, 1, dtype=torch.float64)
    for rows, cols in blocks:
        if len(rows) == 0:
            continue
        require(not bool(covered[rows].any()), "the blocks of masked_least_squares must not share output rows")
        covered[rows] = True
        design = torch.cat([x[:, cols], ones], dim=1)  # [N, |cols| + 1]
        target = y[:, rows]  # [N, |rows|]
        if ridge == 0.0:
            solution = torch.linalg.lstsq(design, target, driver="gelsd").solution  # [|cols| + 1, |rows|]
        else:
            gram = design.T @ design
            scale = gram.diagonal()[:-1].mean() if len(cols) else gram.new_tensor(1.0)
            penalty = torch.full((len(cols) + 1,), float(ridge * scale), dtype=torch.float64)
            penalty[-1] = 0.0  # the bias is not shrunk
            solution = torch.linalg.solve(gram + torch.diag(penalty), design.T @ target)
        weight[rows[:, None], cols[None, :]] = solution[:-1].T
        bias[rows] = solution[-1]
    require(bool(covered.all()), "the blocks of masked_least_squares must cover every output row")
    return weight, bias


def _layout(match: LayerMatch, za: Tensor, zb: Tensor) -> Tensor:
    """Features of A and B ([N, n] each) in the merged layout [mean of merged pairs; A-only; B-only]."""
    return torch.cat(
        [(za[:, match.merged_a] + zb[:, match.merged_b]) / 2, za[:, match.only_a], zb[:, match.only_b]], dim=1
    )


def _blocks(match_out: LayerMatch | None, match_in: LayerMatch | None, rows: int, cols: int, head: str | None):
    """(rows, allowed columns) of a layer: merged outputs read every input, A-only outputs read merged and A-only
    inputs, B-only outputs merged and B-only ones. `head` "a"/"b": every row is that model's."""
    all_cols = torch.arange(cols)
    if match_in is None:  # the network's input is shared by both models
        cols_a = cols_b = all_cols
    else:
        k, m = match_in.num_merged, len(match_in.only_a)
        cols_a = torch.cat([torch.arange(k), torch.arange(k, k + m)])
        cols_b = torch.cat([torch.arange(k), torch.arange(k + m, k + 2 * m)])
    if head is not None:
        return [(torch.arange(rows), cols_a if head == "a" else cols_b)]
    assert match_out is not None
    k, m = match_out.num_merged, len(match_out.only_a)
    return [
        (torch.arange(k), all_cols),
        (torch.arange(k, k + m), cols_a),
        (torch.arange(k + m, k + 2 * m), cols_b),
    ]


@dataclass
class MergedModel:
    """A merged backbone (`hidden.*` of a possibly wider MLP) with one head per source model.

    Args:
        backbone: the merged hidden layers' weights and biases.
        heads: (A's head, B's head), each `{"head.weight", "head.bias"}`.
        matches: the matching of every hidden layer.
    """

    backbone: StateDict
    heads: tuple[StateDict, StateDict]
    matches: list[LayerMatch]

    @property
    def widths(self) -> list[int]:
        return [m.width for m in self.matches]

    def network(self, index: int) -> MLP:
        """The merged MLP with source model `index`'s head (0: A, 1: B), in eval mode."""
        return MLP.from_state({**self.backbone, **self.heads[index]})

    def parameters(self) -> int:
        """Parameters of the backbone and both heads."""
        return sum(t.numel() for t in self.backbone.values()) + sum(t.numel() for h in self.heads for t in h.values())


def _check_pair(a: Mapping[str, Tensor], b: Mapping[str, Tensor], matches: Sequence[LayerMatch]) -> int:
    count = _hidden_count(a)
    require(count == _hidden_count(b), f"A has {count} hidden layers, B {_hidden_count(b)}")
    require(len(matches) == count, f"{len(matches)} layer matches for {count} hidden layers")
    for i in range(count):
        shape_a, shape_b = a[f"hidden.{i}.weight"].shape, b[f"hidden.{i}.weight"].shape
        if shape_a != shape_b:
            raise ConfigError(f"hidden.{i}.weight has shape {tuple(shape_a)} in A but {tuple(shape_b)} in B")
    return count


def zip_merge(a: Mapping[str, Tensor], b: Mapping[str, Tensor], matches: Sequence[LayerMatch]) -> MergedModel:
    """Merged weights straight from a matching, without data (the permutation-only baseline).

    A's row r over the merged inputs reads its own weights at the merged and A-only columns (merged input units
    stand for A's matched unit) and 0 at B-only ones; likewise for B. Merged output rows average A's and B's
    matched rows, unmerged rows are copied, each head is its model's head over the merged layout.
    """
    count = _check_pair(a, b, matches)

    def spread(w: Tensor, match_in: LayerMatch | None, own: Literal["a", "b"]) -> Tensor:
        if match_in is None:
            return w.clone()
        zeros = w.new_zeros(w.shape[0], len(match_in.only_a))
        if own == "a":
            return torch.cat([w[:, match_in.merged_a], w[:, match_in.only_a], zeros], dim=1)
        return torch.cat([w[:, match_in.merged_b], zeros, w[:, match_in.only_b]], dim=1)

    backbone: StateDict = {}
    for i in range(count):
        match_in = matches[i - 1] if i > 0 else None
        m = matches[i]
        wa, wb = spread(a[f"hidden.{i}.weight"], match_in, "a"), spread(b[f"hidden.{i}.weight"], match_in, "b")
        ba, bb = a[f"hidden.{i}.bias"], b[f"hidden.{i}.bias"]
        backbone[f"hidden.{i}.weight"] = torch.cat(
            [(wa[m.merged_a] + wb[m.merged_b]) / 2, wa[m.only_a], wb[m.only_b]], dim=0
        )
        backbone[f"hidden.{i}.bias"] = torch.cat([(ba[m.merged_a] + bb[m.merged_b]) / 2, ba[m.only_a], bb[m.only_b]])
    last = matches[-1]
    heads = (
        {"head.weight": spread(a["head.weight"], last, "a"), "head.bias": a["head.bias"].clone()},
        {"head.weight": spread(b["head.weight"], last, "b"), "head.bias": b["head.bias"].clone()},
    )
    return MergedModel(backbone=backbone, heads=heads, matches=list(matches))


def pleas_merge(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    x: Tensor,
    num_merged: int | Sequence[int] | None = None,
    *,
    width_ratio: float | None = None,
    matches: Sequence[LayerMatch] | None = None,
    ridge: float = 1e-4,
    inputs: Literal["merged", "sources"] = "merged",
) -> MergedModel:
    """PLeaS: partial activation matching, then each merged layer (and each head) by least squares on data x.

    Args:
        a, b: state dicts of two `MLP`s of one architecture (heads may differ in classes); not mutated.
        x: the merge data [N, ...] (flattened to [N, D]); N should exceed the widest merged layer.
        num_merged: merged pairs per hidden layer (an int for all layers, or one per layer); or give
            `width_ratio` (merged width / n, in [1, 2], the same in every layer), or the `matches` themselves.
        ridge: the relative ridge of `masked_least_squares` (0: exact minimum-norm least squares).
        inputs: "merged" feeds each layer's solve the merged network's own features (errors of earlier layers are
            corrected); "sources" feeds the source models' features in the merged layout (the reference code).
    """
    require(inputs in ("merged", "sources"), f"inputs {inputs!r} must be 'merged' or 'sources'")
    given = sum(v is not None for v in (num_merged, width_ratio, matches))
    require(given == 1, "give exactly one of num_merged, width_ratio and matches")
    pre_a, logits_a = mlp_activations(a, x)
    pre_b, logits_b = mlp_activations(b, x)
    if matches is None:
        if width_ratio is not None:
            num_merged = [num_merged_for_width(z.shape[1], width_ratio) for z in pre_a]
        assert num_merged is not None
        matches = match_layers(a, b, x, num_merged)
    count = _check_pair(a, b, matches)
    backbone: StateDict = {}
    features = x.flatten(1).double()  # the input is shared: no layout
    for i in range(count):
        match_in = matches[i - 1] if i > 0 else None
        target = _layout(matches[i], pre_a[i], pre_b[i])  # [N, width_i]
        if inputs == "sources" and match_in is not None:
            features = _layout(match_in, torch.relu(pre_a[i - 1]), torch.relu(pre_b[i - 1])).double()
        blocks = _blocks(matches[i], match_in, target.shape[1], features.shape[1], None)
        weight, bias = masked_least_squares(features, target, blocks, ridge)
        dtype = a[f"hidden.{i}.weight"].dtype
        backbone[f"hidden.{i}.weight"], backbone[f"hidden.{i}.bias"] = weight.to(dtype), bias.to(dtype)
        features = torch.relu(features @ weight.T + bias)  # the merged network's own features
    if inputs == "sources":
        features = _layout(matches[-1], torch.relu(pre_a[-1]), torch.relu(pre_b[-1])).double()
    heads = []
    for own, logits, source in (("a", logits_a, a), ("b", logits_b, b)):
        blocks = _blocks(None, matches[-1], logits.shape[1], features.shape[1], own)
        weight, bias = masked_least_squares(features, logits, blocks, ridge)
        dtype = source["head.weight"].dtype
        heads.append({"head.weight": weight.to(dtype), "head.bias": bias.to(dtype)})
    return MergedModel(backbone=backbone, heads=(heads[0], heads[1]), matches=list(matches))
