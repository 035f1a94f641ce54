"""Unconstrained Model Merging for Enhanced LLM Reasoning (Zhang et al., 2024), https://arxiv.org/abs/2410.13699.

The paper merges reasoning experts in two ways, depending on whether they share an architecture:

- Homogeneous experts (same architecture, fine-tuned from one base): fine-grained layer-wise weight merging. Every
  (layer, module) group g of parameters gets its own coefficient w_{g,i} per expert i, theta_g = base_g +
  sum_i w_{g,i} delta_{i,g} (task arithmetic), or the same weights inside a TIES / DARE combination; the coefficients
  are searched on validation data. `layerwise_merge` does this by calling the engine's `merge` once per group with
  that group's weights (no second implementation of task arithmetic, TIES or DARE), `module_groups` builds the
  groups, `coordinate_search` searches the coefficients.
- Heterogeneous experts (different widths, depths or vocabularies): distribution-level fusion, FuseLLM-style
  (Wan et al., arXiv:2401.10491). Instruction-response data runs through every expert; each expert's next-token
  distributions are aligned to the target's vocabulary (`VocabularyMap`), fused per example (`fuse_distributions`:
  MinCE takes the distribution of the expert with the lowest cross-entropy on the gold response, AvgCE weights them),
  and a target model is trained on `fusion_loss` = lm_weight * CE(gold) + (1 - lm_weight) * KL(fused || target)
  (`distill_fused`).

Deviations and choices:
- No reference code was found; the layer-wise search is ours: coordinate ascent over a grid of coefficient values
  with a fixed evaluation budget (the paper does not pin the search down in its abstract; Sakana-style evolutionary
  search would fit the same interface as a different `search`).
- Token alignment: FuseLLM aligns tokens across tokenizers by minimum edit distance. Here every expert reads the
  same character-level segmentation (one token per character), so the token alignment is the identity and only the
  vocabularies differ (a byte vocabulary vs a compact symbol vocabulary); `VocabularyMap` maps distributions by exact
  token-string match, FuseLLM's vocabulary-mapping step for exact matches. Probability of a source token with no
  counterpart in the target vocabulary is dropped and the rest renormalised.
- MinCE picks one expert per sequence (FuseLLM's granularity); AvgCE weights the experts by softmax(-CE) over
  experts per sequence (FuseLLM weights by CE; the exact weighting is our choice).
- `fusion_loss` uses KL(fused || target), which has the same gradient as FuseLLM's cross-entropy to the fused
  distribution; lm_weight defaults to FuseLLM's 0.9.
"""

import fnmatch
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import ConfigError, require
from paperzoo.efficiency.merging.procedure import merge
from paperzoo.efficiency.merging.task_vector import StateDict, check_compatible

__all__ = [
    "SearchResult",
    "Source",
    "VocabularyMap",
    "coordinate_search",
    "distill_fused",
    "fuse_distributions",
    "fused_targets",
    "fusion_loss",
    "layerwise_merge",
    "module_groups",
    "sequence_cross_entropy",
    "uniform_coefficients",
]

Coefficients = dict[str, list[float]]  # group -> one coefficient per expert

_LAYER = re.compile(r"^(?P<prefix>.*?\.\d+)\.(?P<module>[A-Za-z]+?)(?:_norm)?(?:\.|$)")


# --- homogeneous: layer-wise merging ----------------------------------------------------------------------------
def _group_name(name: str) -> str:
    """`blocks.3.attn.qkv.weight` -> `blocks.3.attn`; `blocks.3.mlp_norm.weight` -> `blocks.3.mlp` (a module's
    pre-norm belongs to it); names without a layer index group by their first component (`embed`, `norm`)."""
    match = _LAYER.match(name)
    if match:
        return f"{match['prefix']}.{match['module']}"
    return name.split(".", 1)[0]


def module_groups(
    state: Mapping[str, torch.Tensor], exclude: Sequence[str] = (), tied: Sequence[Sequence[str]] = ()
) -> dict[str, list[str]]:
    """Per-layer, per-module groups of the floating-point tensors of `state`, in state order.

    A transformer's `blocks.<i>.attn*` and `blocks.<i>.mlp*` tensors (with their `*_norm` pre-norms) form one group
    each; other tensors group by their first name component. Tied tensors go to the group of the first of them, so
    that a merge keeps them equal: those sharing storage (a state dict taken from a model with a tied embedding and
    LM head) and each set of names in `tied` (ties lost in a file round trip, e.g. ("embed.weight", "head.weight")).
    `exclude` (fnmatch patterns) and non-floating-point tensors are left out (the merge copies them from the base).
    """
    tie_of: dict[str, str] = {}  # name -> the first name of its tied set
    for names in tied:
        names = list(names)
        for name in names:
            require(name in state, f"Tied tensor {name!r} is not in the state dict.")
            tie_of[name] = names[0]
    groups: dict[str, list[str]] = {}
    group_of: dict[Any, str] = {}  # storage identity or tied-set head -> group
    for name, tensor in state.items():
        if not tensor.is_floating_point() or any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        storage = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        keys: list[tuple[str, Any]] = [("storage", storage)] if tensor.numel() else []
        if name in tie_of:
            keys.append(("tied", tie_of[name]))
        group = next((group_of[k] for k in keys if k in group_of), _group_name(name))
        for key in keys:
            group_of.setdefault(key, group)
        groups.setdefault(group, []).append(name)
    return groups


def uniform_coefficients(groups: Mapping[str, Sequence[str]], values: Sequence[float]) -> Coefficients:
    """The same coefficient per expert (`values[i]` for expert i) in every group: global task arithmetic."""
    return {group: [float(v) for v in values] for group in groups}


def layerwise_merge(
    base: StateDict,
    models: Sequence[StateDict],
    coefficients: Mapping[str, Sequence[float]],
    groups: Mapping[str, Sequence[str]],
    method: str = "task_arithmetic",
    *,
    seed: int = 0,
    **params: Any,
) -> StateDict:
    """Merge with one coefficient per (group, expert): theta_g = merge_g(base_g, models_g, weights=coefficients[g]).

    With method "task_arithmetic" this is theta_g = base_g + sum_i coefficients[g][i] * (theta_{i,g} - base_g), so
    equal coefficients lambda everywhere give global task arithmetic with lambda_ = lambda. "dare_task_arithmetic"
    and "dare_ties" (masks seeded per model and tensor name, so splitting by group changes nothing) and "ties" with
    scope "tensor" are the TIES/DARE variants; global-scope TIES is refused because its trim threshold spans groups.

    Args:
        base: the pre-trained model's state dict.
        models: the K fine-tuned experts (same names and shapes as `base`).
        coefficients: group -> K coefficients (TIES/DARE-TIES need them > 0: they enter the sign election).
        groups: group -> tensor names (`module_groups(base)`); a tensor in no group is copied from the base.
        method: an engine method; its `lambda_` is fixed at 1 (the coefficients carry the scale).
        seed: DARE's mask seed.
        params: the method's other parameters (density, drop_rate, ...).
    """
    require(len(models) >= 1, "No models to merge; expected at least one.")
    require("lambda_" not in params, "layerwise_merge fixes lambda_ at 1; put the scale into the coefficients.")
    require(
        not (method == "ties" and params.get("scope", "global") == "global"),
        "Layer-wise TIES needs scope='tensor'; a global trim threshold spans all groups.",
    )
    check_compatible(base, models)
    seen: dict[str, str] = {}
    for group, names in groups.items():
        require(group in coefficients, f"Group {group!r} has no coefficients; expected {len(models)} for it.")
        values = list(coefficients[group])
        require(
            len(values) == len(models),
            f"Group {group!r} has {len(values)} coefficients for {len(models)} models; expected one per model.",
        )
        require(all(math.isfinite(v) for v in values), f"Group {group!r} has non-finite coefficients {values}.")
        for name in names:
            require(name in base, f"Group {group!r} names tensor {name!r}, which the base does not have.")
            require(name not in seen, f"Tensor {name!r} is in groups {seen.get(name)!r} and {group!r}; expected one.")
            seen[name] = group
    extra = [g for g in coefficients if g not in groups]
    require(not extra, f"Coefficients for unknown group {extra[0] if extra else ''!r}; expected one of the groups.")
    merged: StateDict = {}
    for group, names in groups.items():
        if not names:
            continue
        sub_base = {n: base[n] for n in names}
        sub_models = [{n: model[n] for n in names} for model in models]
        part = merge(sub_base, sub_models, method, weights=list(coefficients[group]), seed=seed, lambda_=1.0, **params)
        merged.update(part)
    with torch.no_grad():
        return {name: merged[name] if name in merged else tensor.detach().clone() for name, tensor in base.items()}


@dataclass
class SearchResult:
    """What `coordinate_search` found: the best coefficients, their score, and every evaluation in order."""

    coefficients: Coefficients
    score: float
    evaluations: int
    history: list[tuple[int, float]] = field(default_factory=list)  # (evaluation index, best score so far)


def coordinate_search(
    objective: Callable[[Coefficients], float],
    initial: Mapping[str, Sequence[float]],
    grid: Sequence[float],
    *,
    sweeps: int = 2,
    budget: int | None = None,
) -> SearchResult:
    """Maximise `objective` over per-(group, expert) coefficients by coordinate ascent.

    From `initial`, each sweep visits every coordinate (group, expert) in order and tries every value of `grid` for
    it with the others fixed, keeping a value only if it raises the best score strictly (so ties keep the earlier,
    simpler setting). Stops after `sweeps` sweeps, after a sweep without improvement, or when `budget` objective
    calls are spent. The initial point is evaluated first, so the result is never worse than it on the objective.
    """
    require(sweeps >= 1, f"sweeps={sweeps}; expected at least 1.")
    require(len(grid) >= 1, "The coefficient grid is empty; expected at least one value.")
    require(budget is None or budget >= 1, f"budget={budget}; expected at least 1 evaluation.")
    best = {g: [float(v) for v in values] for g, values in initial.items()}
    best_score = float(objective(best))
    calls, history = 1, [(1, best_score)]
    for _ in range(sweeps):
        improved = False
        for group in list(best):
            for index in range(len(best[group])):
                tried = {best[group][index]}  # the current value's score is known
                for value in grid:
                    if float(value) in tried:
                        continue
                    if budget is not None and calls >= budget:
                        return SearchResult(best, best_score, calls, history)
                    tried.add(float(value))
                    trial = {g: list(v) for g, v in best.items()}
                    trial[group][index] = float(value)
                    score = float(objective(trial))
                    calls += 1
                    if score > best_score:
                        best, best_score, improved = trial, score, True
                    history.append((calls, best_score))
        if not improved:
            break
    return SearchResult(best, best_score, calls, history)


# --- heterogeneous: distribution fusion ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VocabularyMap:
    """Maps a source model's vocabulary onto the target's by exact token-string match.

    Args:
        source_tokens: the source's tokens, index = token id (e.g. one character each).
        target_tokens: the target's tokens, index = token id.
    """

    source_tokens: tuple[str, ...]
    target_tokens: tuple[str, ...]

    @property
    def index(self) -> torch.Tensor:
        """[Vs] int64: the target id of each source token, -1 where the target has no such token."""
        position = {token: i for i, token in enumerate(self.target_tokens)}
        return torch.tensor([position.get(token, -1) for token in self.source_tokens], dtype=torch.long)

    @classmethod
    def identity(cls, size: int) -> "VocabularyMap":
        """Source and target share one vocabulary of `size` tokens."""
        tokens = tuple(str(i) for i in range(size))
        return cls(tokens, tokens)

    def to_target_log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Source logits [..., Vs] -> log-probabilities [..., Vt] over the target vocabulary.

        The probability of each source token moves to its target id; target tokens without a source counterpart get
        probability 0 (log -inf); the mass of unmapped source tokens is dropped and the rest renormalised.
        """
        index = self.index.to(logits.device)
        require(
            logits.shape[-1] == index.numel(),
            f"Logits have {logits.shape[-1]} entries per token but the source vocabulary has {index.numel()}.",
        )
        mapped = index >= 0
        require(bool(mapped.any()), "No source token exists in the target vocabulary; nothing to align.")
        log_probs = F.log_softmax(logits.float(), dim=-1)[..., mapped]  # [..., Vm]
        log_probs = log_probs - torch.logsumexp(log_probs, dim=-1, keepdim=True)
        out = torch.full((*logits.shape[:-1], len(self.target_tokens)), -math.inf, device=logits.device)
        out[..., index[mapped]] = log_probs
        return out


def sequence_cross_entropy(log_probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean cross-entropy of the gold tokens over the masked positions.

    Args:
        log_probs: [B, T, V] log-probabilities.
        targets: [B, T] int64 gold next tokens.
        mask: [B, T] bool, True where the position counts (the response); every row needs one.

    Returns:
        [B] float32.
    """
    require(bool(mask.any(dim=-1).all()), "A sequence has no masked-in position; expected at least one per row.")
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T]
    nll = torch.where(mask, nll, torch.zeros_like(nll))
    return nll.sum(dim=-1) / mask.sum(dim=-1)


def fuse_distributions(
    log_probs: Sequence[torch.Tensor],
    targets: torch.Tensor,
    mask: torch.Tensor,
    mode: Literal["min_ce", "avg_ce"] = "min_ce",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse K experts' next-token distributions (aligned to one vocabulary) per sequence.

    Args:
        log_probs: K tensors [B, T, V] of log-probabilities over the target vocabulary.
        targets: [B, T] gold next tokens; mask: [B, T] bool positions scored (the response).
        mode: "min_ce": each sequence takes the distribution of the expert with the lowest cross-entropy on its gold
            tokens (FuseLLM's MinCE; ties go to the lower index); "avg_ce": a mixture with weights softmax(-CE) over
            experts.

    Returns:
        fused probabilities [B, T, V] and the weights [B, K] (one-hot for min_ce).
    """
    require(len(log_probs) >= 1, "No distributions to fuse; expected at least one expert.")
    shapes = {tuple(lp.shape) for lp in log_probs}
    require(len(shapes) == 1, f"Experts' distributions have different shapes {sorted(shapes)}; align them first.")
    stacked = torch.stack([lp.float() for lp in log_probs])  # [K, B, T, V]
    ce = torch.stack([sequence_cross_entropy(lp, targets, mask) for lp in stacked], dim=-1)  # [B, K]
    if mode == "min_ce":
        weights = F.one_hot(ce.argmin(dim=-1), num_classes=len(log_probs)).float()  # [B, K]
    elif mode == "avg_ce":
        weights = torch.softmax(-ce, dim=-1)
    else:
        raise ConfigError(f"Unknown fusion mode {mode!r}; expected 'min_ce' or 'avg_ce'.")
    fused = torch.einsum("bk,kbtv->btv", weights, stacked.exp())
    return fused, weights


def fusion_loss(
    student_logits: torch.Tensor,
    fused_probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    lm_weight: float = 0.9,
) -> torch.Tensor:
    """lm_weight * CE(student, gold) + (1 - lm_weight) * KL(fused || student), each a mean over masked positions.

    Args:
        student_logits: [B, T, V]; fused_probs: [B, T, V] (rows sum to 1); targets: [B, T]; mask: [B, T] bool.
        lm_weight: weight of the causal-LM loss, in [0, 1].
    """
    require(0.0 <= lm_weight <= 1.0, f"lm_weight={lm_weight} is out of range; expected 0 <= lm_weight <= 1.")
    log_q = F.log_softmax(student_logits.float(), dim=-1)  # [B, T, V]
    positions = mask.sum().clamp(min=1)
    nll = -log_q.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T]
    lm = (nll * mask).sum() / positions
    p = fused_probs.float()
    kl = torch.where(p > 0, p * (p.clamp(min=1e-30).log() - log_q), torch.zeros_like(p)).sum(-1)  # [B, T]
    return lm_weight * lm + (1.0 - lm_weight) * (kl * mask).sum() / positions


@dataclass(frozen=True)
class Source:
    """One expert for fusion: a model mapping tokens [B, T] (its own vocabulary) to logits, and how to read it."""

    model: nn.Module
    vocabulary: VocabularyMap
    encode: Callable[[torch.Tensor], torch.Tensor] = lambda tokens: tokens  # target ids [B, T] -> source ids


def fused_targets(
    sources: Sequence[Source],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    mode: Literal["min_ce", "avg_ce"] = "min_ce",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `inputs` (target-vocabulary ids [B, T]) through every source, align and fuse: (probs [B, T, V], [B, K])."""
    with torch.no_grad():
        aligned = [s.vocabulary.to_target_log_probs(s.model(s.encode(inputs))) for s in sources]
    return fuse_distributions(aligned, targets, mask, mode)


def distill_fused(
    student: nn.Module,
    sources: Sequence[Source],
    batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    steps: int,
    *,
    lr: float = 1e-3,
    lm_weight: float = 0.9,
    mode: Literal["min_ce", "avg_ce"] = "min_ce",
    weight_decay: float = 0.0,
    on_step: Callable[[int, float, torch.Tensor], None] | None = None,
) -> nn.Module:
    """Train `student` in place on `fusion_loss` against the sources' fused distributions (FuseLLM).

    Args:
        student: the target model, token ids [B, T] -> logits [B, T, V] over the target vocabulary.
        sources: the experts, each with its vocabulary map to the target's.
        batches: yields (inputs [B, T], targets [B, T], mask [B, T] bool) in target-vocabulary ids.
        steps: optimiser steps (AdamW, linear decay of `lr` to 0).
        on_step: called with (step, loss, fusion weights [B, K]) after each step.
    """
    require(steps >= 1, f"steps={steps}; expected at least 1.")
    for source in sources:
        source.model.eval()
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / steps)
    student.train()
    for step in range(steps):
        inputs, targets, mask = next(batches)
        fused, weights = fused_targets(sources, inputs, targets, mask, mode)
        loss = fusion_loss(student(inputs), fused, targets, mask, lm_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, float(loss.detach()), weights)
    student.eval()
    return student
