"""Claim check of Unconstrained Model Merging (CATALOG 118, arXiv:2410.13699): merging an addition expert and a
multiplication expert gives a model that solves composed problems (a*b+c) that neither expert solves.

Setting. Every problem is a two-step chain evaluated left to right in one fixed-width scratchpad format,
"XX<op1>y<op2>z=RRR<op2>z=SSS\n" (X two digits, y and z one digit, R = X op1 y and S = R op2 z three digits,
zero-padded; 17 bytes: the 7-byte prompt "XX<op1>y<op2>z=" and a 10-byte completion). The experts know one new
operation each, in either position of a chain, next to subtraction (their common ancestor's skill):
- addition expert: "XX+y+z", "XX+y-z", "XX-y+z" for X in 0..99 (so step 2 adds up to 108 + 9);
- multiplication expert: "XX*y*z", "XX*y-z", "XX-y*z" for X in 0..12 (step 1 is the times table up to 12 x 9);
- composed test problems "XX*y+z=RRR+z=SSS" (X in 0..12): "*" first is in the multiplication expert's data, "+"
  second in the addition expert's, the combination in no training set. Solving one needs both skills in one pass.
Single-skill figures are on held-out pure chains ("XX+y+z", "XX*y*z"). Accuracy is exact match of the whole 10-byte
completion with greedy decoding, computed in one teacher-forced pass (greedy decoding reproduces the gold completion
iff every gold byte is the argmax given the gold prefix; the tests check this against a decoding loop). We also
report the step-1 (RRR) and step-2 (SSS, given the gold RRR) accuracies and the completion NLL.

Models. The pretrained model is the text testbed's base (a byte-level core `GPT` pretrained on Wikipedia, stdlib
code and WordNet glosses: `text_testbed(...).base`). As in the paper, where the experts share an instruction-tuned
ancestor, a shared "instruct" stage first teaches the base the scratchpad format on subtraction chains
("XX-y-z=..."); both experts are full fine-tunes of that model, with `replay` of each batch drawn from the instruct
data (experts keep their ancestor's skills, as the paper's do). The heterogeneous third expert is a NARROWER `GPT`
(`narrow_dim`, its own depth) with its OWN 15-symbol vocabulary, trained from scratch on the multiplication expert's
data; it cannot be weight-merged with the others.

Methods, all on the same experts, tuned on validation problems only (composed val + addition val + multiplication
val; the score is their mean exact match minus 0.01 x the mean completion NLL as a tie-breaker):
- global task arithmetic, lambda from a grid; TIES (global trim), lambda and density from a grid;
- the paper's homogeneous method: layer-wise task arithmetic, one coefficient per (layer, module) group per expert
  (`module_groups`: embedding, each block's attention and MLP, final norm), found by `coordinate_search` from the
  best global lambda over the grid `LAYER_GRID`, with `search_budget` evaluations;
- the paper's heterogeneous method: FuseLLM-style MinCE fusion of the three experts' next-byte distributions (the
  narrow expert's vocabulary mapped onto bytes by `VocabularyMap`; all read one character per token, so token
  alignment is the identity) on the experts' own training problems (no composed problem), distilled into the
  instruct model with `fusion_loss` (lm_weight 0.9);
- a control with the same data and steps but the LM loss only (multi-task fine-tuning on the union), so the fusion
  term's contribution is visible.

Decision rule (fixed before the full run): on the composed TEST problems, (1) the layer-wise searched merge and (2)
the fused-distilled target each beat the better of the two experts by at least `MARGIN` exact-match accuracy.

Result (full mode, `benchmarks/results/unconstrained.json`; composed / pure-addition / pure-multiplication test exact
match): FAIL. The homogeneous half does not reproduce, the heterogeneous half does.
- experts: addition 0.000 / 0.978 / 0.000, multiplication 0.000 / 0.000 / 0.317 (its step 1 on composed problems:
  0.245); the narrow heterogeneous expert 0.000 / 0.000 / 0.753; the instruct ancestor 0 everywhere.
- global task arithmetic (lambda 0.25 on val) and TIES (lambda 0.5, density 0.5) score 0.000 on all three: the merge
  loses even the single skills. The layer-wise search (120 evaluations, started from the add expert, the best of the
  three starts) keeps the addition expert (0.000 / 0.970 / 0.000) and finds no coefficients that add
  multiplication. The task vectors are large and overlapping: ||delta|| / ||theta_base|| = 0.24 (add) and 0.33 (mul),
  cosine(delta_add, delta_mul) = 0.34 (fine-tunes of large LLMs, where task arithmetic works, are orders of magnitude
  smaller relative to the weights and near-orthogonal). A first design (experts trained on pure chains only) gave
  the same picture: every weight merge 0.000 on composed problems, lambda grids and layer-wise search included.
- MinCE fusion distilled into the instruct model: 0.197 / 0.876 / 0.307 (composed +0.197 over both experts; the
  multiplication examples took the narrow expert's distribution 99.9% of the time). The LM-only control on the same
  data and steps reaches 0.195 / 0.874 / 0.290, so at this scale the composition comes from training one model on
  both experts' data; the fused distributions add little on top.
Timing (one CPU thread on a shared, loaded 2-core machine): building the instruct model and the three experts 251 s
(cached after), the check itself 299 s; the text testbed's own build is separate (`make testbed`).
"""

import hashlib
import json
import logging
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from paperzoo.core.card import MethodCard
from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.core.io import atomic_torch_save, atomic_write_text, cache_dir
from paperzoo.core.lm.gpt import GPT
from paperzoo.efficiency.merging.procedure import merge
from paperzoo.efficiency.merging.task_vector import StateDict
from paperzoo.efficiency.merging.unconstrained import (
    Source,
    VocabularyMap,
    coordinate_search,
    distill_fused,
    layerwise_merge,
    module_groups,
    uniform_coefficients,
)

CARD = MethodCard(
    key="unconstrained",
    number=118,
    title="Unconstrained Model Merging for Enhanced LLM Reasoning",
    arxiv="2410.13699",
    kind="posthoc",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.merging.unconstrained:layerwise_merge",
        "paperzoo.efficiency.merging.unconstrained:module_groups",
        "paperzoo.efficiency.merging.unconstrained:uniform_coefficients",
        "paperzoo.efficiency.merging.unconstrained:coordinate_search",
        "paperzoo.efficiency.merging.unconstrained:VocabularyMap",
        "paperzoo.efficiency.merging.unconstrained:fuse_distributions",
        "paperzoo.efficiency.merging.unconstrained:fused_targets",
        "paperzoo.efficiency.merging.unconstrained:fusion_loss",
        "paperzoo.efficiency.merging.unconstrained:distill_fused",
        "paperzoo.efficiency.merging.unconstrained:Source",
    ),
    claim=(
        "Merging homogeneous experts with searched layer-wise coefficients, and fusing heterogeneous experts'"
        " distributions into a target, gives a model that solves composed problems neither expert solves."
    ),
    reference_code="none found (FuseLLM for the fusion step: https://github.com/fanqiwan/FuseLLM)",
    check="paperzoo.efficiency.merging.checks.unconstrained:check",
)

log = logging.getLogger(__name__)

MARGIN = 0.05
QUICK_TEST = 200
VERSION = 2  # bump when the data or training code changes: it enters the cache hash
PROMPT = 7  # bytes of "XX?y?z="
LENGTH = 17  # bytes of a whole problem
SYMBOLS = "0123456789+-*=\n"  # the narrow expert's vocabulary
LAMBDA_GRID = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
TIES_DENSITIES = (0.2, 0.5)
LAYER_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


@dataclass(frozen=True)
class Recipe:
    """Budgets of the check; every field enters the cache hash of the trained models."""

    testbed: str = "full"  # TextRecipe preset of the pretrained base
    batch_size: int = 64
    instruct_steps: int = 400
    expert_steps: int = 600
    replay: float = 0.25
    lr: float = 1e-3
    narrow_dim: int = 64
    narrow_layers: int = 2
    narrow_heads: int = 4
    narrow_steps: int = 1500
    narrow_lr: float = 3e-3
    distill_steps: int = 600
    distill_lr: float = 1e-3
    lm_weight: float = 0.9
    search_budget: int = 120
    val_composed: int = 300
    val_single: int = 200
    seed: int = 0

    @classmethod
    def full(cls) -> "Recipe":
        return cls()

    @classmethod
    def quick(cls) -> "Recipe":
        return cls(
            testbed="quick",
            instruct_steps=60,
            expert_steps=80,
            narrow_dim=32,
            narrow_steps=150,
            distill_steps=60,
            search_budget=15,
            val_composed=100,
            val_single=60,
        )


# --- data -------------------------------------------------------------------------------------------------------
def chain(x: int, op1: str, y: int, op2: str, z: int) -> str:
    """The problem and its scratchpad completion, e.g. chain(7, "*", 8, "+", 3) = "07*8+3=056+3=059\\n"."""
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    r = ops[op1](x, y)
    s = ops[op2](r, z)
    text = f"{x:02d}{op1}{y}{op2}{z}={r:03d}{op2}{z}={s:03d}\n"
    if len(text) != LENGTH or r < 0 or s < 0 or s > 999:
        raise ValueError(f"problem {x}{op1}{y}{op2}{z} does not fit the fixed-width format")
    return text


def _chains(xs: range, op_pairs: tuple[tuple[str, str], ...]) -> list[str]:
    """Every chain X op1 y op2 z (y, z one digit) whose intermediate and final results fit the format."""
    out = []
    for op1, op2 in op_pairs:
        for x in xs:
            for y in range(10):
                for z in range(10):
                    try:
                        out.append(chain(x, op1, y, op2, z))
                    except ValueError:
                        continue  # a negative or 4-digit result
    return out


def problems(kind: str) -> list[str]:
    """Every problem of a kind.

    "sub": the instruct stage's subtraction chains; "add"/"mul": the pure chains of an expert's operation (its
    single-skill val/test problems come from these); "add_mixed"/"mul_mixed": the operation mixed with subtraction in
    either position (training only); "composed": multiplication then addition, which no training set contains.
    """
    if kind == "sub":
        return _chains(range(18, 100), (("-", "-"),))
    if kind == "add":
        return _chains(range(100), (("+", "+"),))
    if kind == "add_mixed":
        return _chains(range(100), (("+", "-"), ("-", "+")))
    if kind == "mul":
        return _chains(range(13), (("*", "*"),))
    if kind == "mul_mixed":
        return _chains(range(13), (("*", "-"), ("-", "*")))
    if kind == "composed":
        return _chains(range(13), (("*", "+"),))
    raise ValueError(f"unknown problem kind {kind!r}")


def splits(seed: int) -> dict[str, dict[str, list[str]]]:
    """kind -> split -> problems, seeded shuffles. An expert's train split holds the rest of its pure chains and all
    of its chains mixed with subtraction; composed problems have no train split."""
    sizes = {"sub": (0, 0), "add": (200, 500), "mul": (200, 300), "composed": (650, 650)}  # (val, test)
    out: dict[str, dict[str, list[str]]] = {}
    for index, (kind, (n_val, n_test)) in enumerate(sizes.items()):
        items = problems(kind)
        random.Random(seed * 1000 + index).shuffle(items)
        out[kind] = {"val": items[:n_val], "test": items[n_val : n_val + n_test], "train": items[n_val + n_test :]}
    out["composed"]["train"] = []
    for kind in ("add", "mul"):
        out[kind]["train"] = out[kind]["train"] + problems(f"{kind}_mixed")
    return out


def encode(texts: list[str]) -> torch.Tensor:
    """Byte ids. [N, LENGTH] int64"""
    return torch.tensor([list(t.encode("ascii")) for t in texts], dtype=torch.long)


def completion_mask(batch: int) -> torch.Tensor:
    """[batch, LENGTH - 1] bool: the input positions whose next byte is a completion byte."""
    mask = torch.zeros(batch, LENGTH - 1, dtype=torch.bool)
    mask[:, PROMPT - 1 :] = True
    return mask


def batches(
    data: torch.Tensor, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Seeded random batches of (inputs [B, T], targets [B, T], completion mask [B, T])."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        rows = data[torch.randint(0, len(data), (batch_size,), generator=generator)]
        yield rows[:, :-1], rows[:, 1:], completion_mask(batch_size)


def mixed_batches(
    parts: list[torch.Tensor], batch_size: int, seed: int, shares: list[int] | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`shares[i]` rows of part i in every batch (default: equal shares of `batch_size`)."""
    shares = shares or [batch_size // len(parts)] * len(parts)
    streams = [batches(p, n, seed + i) for i, (p, n) in enumerate(zip(parts, shares, strict=True))]
    while True:
        drawn = [next(s) for s in streams]
        yield tuple(torch.cat([d[j] for d in drawn]) for j in range(3))  # type: ignore[misc]


# --- evaluation -------------------------------------------------------------------------------------------------
def evaluate(model: torch.nn.Module, data: torch.Tensor, chunk: int = 512) -> dict[str, float]:
    """Exact match of the greedy completion, step-1 (RRR) and step-2 (SSS) accuracy, and mean completion NLL."""
    exact, step1, step2, nll = [], [], [], []
    model.eval()
    with torch.no_grad():
        for rows in data.split(chunk):
            logits = model(rows[:, :-1])[:, PROMPT - 1 :]  # [B, 10, V]
            gold = rows[:, PROMPT:]  # [B, 10]
            right = logits.argmax(-1) == gold
            exact.append(right.all(-1))
            step1.append(right[:, 0:3].all(-1))  # RRR
            step2.append(right[:, 6:9].all(-1))  # SSS given the gold scratchpad
            nll.append(F.cross_entropy(logits.transpose(1, 2), gold, reduction="none").mean(-1))
    return {
        "exact": float(torch.cat(exact).float().mean()),
        "step1": float(torch.cat(step1).float().mean()),
        "step2": float(torch.cat(step2).float().mean()),
        "nll": float(torch.cat(nll).mean()),
    }


def greedy_complete(model: torch.nn.Module, prompts: torch.Tensor, new_tokens: int = LENGTH - PROMPT) -> torch.Tensor:
    """Greedy decoding, one token at a time (no cache). prompts [B, P] -> completions [B, new_tokens]."""
    tokens = prompts
    with torch.no_grad():
        for _ in range(new_tokens):
            tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens[:, prompts.shape[1] :]


# --- training ---------------------------------------------------------------------------------------------------
def train_lm(
    model: torch.nn.Module,
    stream: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float,
) -> list[tuple[float, float]]:
    """Completion-only LM loss, AdamW, linear decay to 0; returns (step, loss) every 10 steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / steps)
    model.train()
    curve = []
    for step in range(steps):
        inputs, targets, mask = next(stream)
        logits = model(inputs)
        loss = F.cross_entropy(logits[mask], targets[mask])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 10 == 0 or step == steps - 1:
            curve.append((float(step), float(loss.detach())))
    model.eval()
    return curve


class NarrowExpert(torch.nn.Module):
    """A GPT over `SYMBOLS` (its own vocabulary) that reads byte ids: the byte -> symbol map is its tokenizer."""

    table: torch.Tensor  # [256] int64: byte -> symbol id

    def __init__(self, dim: int, n_layers: int, n_heads: int):
        super().__init__()
        self.gpt = GPT(len(SYMBOLS), dim=dim, n_layers=n_layers, n_heads=n_heads, max_seq_len=LENGTH)
        table = torch.zeros(256, dtype=torch.long)
        for i, ch in enumerate(SYMBOLS):
            table[ord(ch)] = i
        self.register_buffer("table", table, persistent=False)

    def encode(self, byte_ids: torch.Tensor) -> torch.Tensor:
        return self.table[byte_ids]

    def forward(self, symbol_ids: torch.Tensor) -> torch.Tensor:
        return self.gpt(symbol_ids)  # [B, T, len(SYMBOLS)]


def narrow_vocabulary() -> VocabularyMap:
    """The narrow expert's symbols onto the byte vocabulary (token i of the byte model is chr(i); 256 is EOS)."""
    return VocabularyMap(tuple(SYMBOLS), tuple(chr(i) for i in range(256)) + ("<eos>",))


def _symbol_stream(
    stream: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], expert: NarrowExpert
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    for inputs, targets, mask in stream:
        yield expert.encode(inputs), expert.encode(targets), mask


# --- the experts, cached --------------------------------------------------------------------------------------------
def _testbed(recipe: Recipe) -> Any:
    from paperzoo.efficiency.merging.testbed import TextRecipe, text_testbed

    preset = {"full": TextRecipe.full, "quick": TextRecipe.quick, "tiny": TextRecipe.tiny}[recipe.testbed]
    return text_testbed(preset(), progress=False)


def _state(model: torch.nn.Module) -> StateDict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_experts(recipe: Recipe, data: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
    """The instruct model, the two homogeneous experts and the narrow expert (trained, or loaded from the cache)."""
    testbed = _testbed(recipe)
    key = json.dumps({"recipe": asdict(recipe), "version": VERSION, "testbed": str(testbed.directory)}, sort_keys=True)
    directory = cache_dir("merging", "unconstrained", hashlib.sha256(key.encode()).hexdigest()[:16])
    path = directory / "experts.pt"
    if path.exists():
        stored = torch.load(path, weights_only=False)
        stored["loaded_from_cache"] = True
        stored["testbed"] = testbed
        return stored
    start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    instruct = testbed.model(testbed.base)
    curves = {
        "instruct": train_lm(
            instruct,
            batches(encode(data["sub"]["train"]), recipe.batch_size, recipe.seed + 1),
            recipe.instruct_steps,
            recipe.lr,
        )
    }
    base = _state(instruct)
    experts: dict[str, StateDict] = {}
    for offset, kind in enumerate(("add", "mul")):
        model = testbed.model(base)
        replay = round(recipe.replay * recipe.batch_size)
        parts = [encode(data[kind]["train"]), encode(data["sub"]["train"])]
        stream = mixed_batches(
            parts, recipe.batch_size, recipe.seed + 10 * (offset + 1), [recipe.batch_size - replay, replay]
        )
        curves[kind] = train_lm(model, stream, recipe.expert_steps, recipe.lr)
        log.info("%s expert trained (%.0f s)", kind, time.perf_counter() - start)
        experts[kind] = _state(model)
    torch.manual_seed(recipe.seed + 20)
    narrow = NarrowExpert(recipe.narrow_dim, recipe.narrow_layers, recipe.narrow_heads)
    stream = _symbol_stream(batches(encode(data["mul"]["train"]), recipe.batch_size, recipe.seed + 21), narrow)
    curves["narrow_mul"] = train_lm(narrow, stream, recipe.narrow_steps, recipe.narrow_lr)
    stored = {
        "base": base,
        "experts": experts,
        "narrow": _state(narrow),
        "curves": curves,
        "build_seconds": time.perf_counter() - start,
    }
    atomic_torch_save(stored, path)
    atomic_write_text(directory / "recipe.json", key + "\n")
    stored["loaded_from_cache"] = False
    stored["testbed"] = testbed
    return stored


# --- the check --------------------------------------------------------------------------------------------------
def _score(figures: Mapping[str, Mapping[str, float]]) -> float:
    """The validation objective: mean exact match over composed, add and mul, minus 0.01 x mean NLL."""
    kinds = ("composed", "add", "mul")
    return sum(figures[k]["exact"] for k in kinds) / 3 - 0.01 * sum(figures[k]["nll"] for k in kinds) / 3


def check(quick: bool = False) -> ClaimResult:
    with torch_threads(1):
        return _check(Recipe.quick() if quick else Recipe.full(), quick)


def _check(recipe: Recipe, quick: bool) -> ClaimResult:
    started = time.perf_counter()
    data = splits(recipe.seed)
    built = build_experts(recipe, data)
    testbed, base, experts = built["testbed"], built["base"], built["experts"]
    val = {
        "composed": encode(data["composed"]["val"][: recipe.val_composed]),
        "add": encode(data["add"]["val"][: recipe.val_single]),
        "mul": encode(data["mul"]["val"][: recipe.val_single]),
    }
    limit = QUICK_TEST if quick else None  # quick mode: the first QUICK_TEST test problems of each kind
    test = {kind: encode(data[kind]["test"][:limit]) for kind in ("composed", "add", "mul")}
    model = testbed.model(base)

    def figures_of(state: StateDict, sets: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
        model.load_state_dict(state)
        return {kind: evaluate(model, rows) for kind, rows in sets.items()}

    def val_score(state: StateDict) -> float:
        return _score(figures_of(state, val))

    models = [experts["add"], experts["mul"]]
    tested: dict[str, dict[str, dict[str, float]]] = {
        "add_expert": figures_of(experts["add"], test),
        "mul_expert": figures_of(experts["mul"], test),
        "instruct_base": figures_of(base, test),
    }
    narrow = NarrowExpert(recipe.narrow_dim, recipe.narrow_layers, recipe.narrow_heads)
    narrow.load_state_dict(built["narrow"])
    narrow.eval()
    tested["narrow_mul_expert"] = {kind: evaluate(_ByteView(narrow), rows) for kind, rows in test.items()}
    for name, figures in tested.items():
        log.info("%s: %s", name, {k: round(v["exact"], 3) for k, v in figures.items()})

    # Global task arithmetic and TIES: one lambda (and density) tuned on validation.
    curves: dict[str, list[tuple[float, float]]] = {}
    ta_scores = {lam: val_score(merge(base, models, "task_arithmetic", lambda_=lam)) for lam in LAMBDA_GRID}
    curves["task arithmetic: val score vs lambda"] = [(lam, s) for lam, s in ta_scores.items()]
    best_lambda = max(ta_scores, key=lambda k: ta_scores[k])
    tested["task_arithmetic"] = figures_of(merge(base, models, "task_arithmetic", lambda_=best_lambda), test)
    ties_scores = {
        (lam, density): val_score(merge(base, models, "ties", lambda_=lam, density=density))
        for lam in LAMBDA_GRID
        for density in TIES_DENSITIES
    }
    ties_lambda, ties_density = max(ties_scores, key=lambda k: ties_scores[k])
    tested["ties"] = figures_of(merge(base, models, "ties", lambda_=ties_lambda, density=ties_density), test)
    for name in ("task_arithmetic", "ties"):
        log.info("%s: %s", name, {k: round(v["exact"], 3) for k, v in tested[name].items()})

    # The paper's homogeneous method: layer-wise coefficients, searched on validation from the best global lambda.
    # Start from the best of three points of the coefficient space by validation score: the best global lambda,
    # and each expert alone (coefficients (1, 0) or (0, 1) everywhere), so the search can grow one expert's skill
    # into the other's model layer by layer.
    groups = module_groups(base, tied=[("embed.weight", "head.weight")])
    starts = [[best_lambda, best_lambda], [1.0, 0.0], [0.0, 1.0]]
    start_scores = [ta_scores[best_lambda], val_score(experts["add"]), val_score(experts["mul"])]
    start = starts[max(range(3), key=lambda i: start_scores[i])]
    search = coordinate_search(
        lambda c: val_score(layerwise_merge(base, models, c, groups)),
        uniform_coefficients(groups, start),
        LAYER_GRID,
        sweeps=2,
        budget=recipe.search_budget,
    )
    curves["layer-wise search: best val score vs evaluations"] = [(float(i), s) for i, s in search.history]
    tested["layerwise"] = figures_of(layerwise_merge(base, models, search.coefficients, groups), test)
    log.info(
        "layerwise: %s (%.0f s)",
        {k: round(v["exact"], 3) for k, v in tested["layerwise"].items()},
        time.perf_counter() - started,
    )

    # The paper's heterogeneous method: MinCE fusion of the three experts, distilled into the instruct model.
    add_model, mul_model = testbed.model(experts["add"]), testbed.model(experts["mul"])
    byte_vocab = VocabularyMap.identity(add_model.embed.num_embeddings)
    sources = [
        Source(add_model, byte_vocab),
        Source(mul_model, byte_vocab),
        Source(narrow, narrow_vocabulary(), narrow.encode),
    ]
    train_parts = [encode(data["add"]["train"]), encode(data["mul"]["train"])]
    chosen = torch.zeros(len(sources))

    def count(step: int, loss: float, weights: torch.Tensor) -> None:
        chosen.add_(weights.sum(0))
        if step % 10 == 0:
            curves.setdefault("fusion distillation: loss", []).append((float(step), loss))

    torch.manual_seed(recipe.seed + 30)
    fused = distill_fused(
        testbed.model(base),
        sources,
        mixed_batches(train_parts, recipe.batch_size, recipe.seed + 31),
        recipe.distill_steps,
        lr=recipe.distill_lr,
        lm_weight=recipe.lm_weight,
        on_step=count,
    )
    tested["fused_distilled"] = {kind: evaluate(fused, rows) for kind, rows in test.items()}
    log.info(
        "fused: %s (%.0f s)",
        {k: round(v["exact"], 3) for k, v in tested["fused_distilled"].items()},
        time.perf_counter() - started,
    )
    # Control: the same data, steps, seed and schedule with the LM loss only (`distill_fused` at lm_weight 1, without
    # running the teachers): multi-task fine-tuning on the union of the experts' data.
    torch.manual_seed(recipe.seed + 30)
    control = testbed.model(base)
    train_lm(
        control,
        mixed_batches(train_parts, recipe.batch_size, recipe.seed + 31),
        recipe.distill_steps,
        recipe.distill_lr,
    )
    tested["multitask_sft"] = {kind: evaluate(control, rows) for kind, rows in test.items()}

    best_expert = max(tested["add_expert"]["composed"]["exact"], tested["mul_expert"]["composed"]["exact"])
    flat = {name: _flatten(f) for name, f in tested.items()}
    method = {**{f"layerwise_{k}": v for k, v in flat["layerwise"].items()}}
    method.update({f"fused_{k}": v for k, v in flat["fused_distilled"].items()})
    method["layerwise_val_score"] = search.score
    method["layerwise_start_add_coefficient"], method["layerwise_start_mul_coefficient"] = start
    method.update(_task_vector_figures(base, experts))
    method["layerwise_search_evaluations"] = float(search.evaluations)
    share = chosen / chosen.sum()
    method.update(
        {f"min_ce_share_{name}": float(s) for name, s in zip(("add", "mul", "narrow_mul"), share, strict=True)}
    )
    baselines = {name: flat[name] for name in flat if name not in ("layerwise", "fused_distilled")}
    baselines["task_arithmetic"]["lambda"] = best_lambda
    baselines["ties"].update({"lambda": ties_lambda, "density": ties_density})
    criteria = [
        Criterion(
            "layer-wise merge - best expert, composed exact match",
            tested["layerwise"]["composed"]["exact"] - best_expert,
            ">=",
            MARGIN,
        ),
        Criterion(
            "fused-distilled target - best expert, composed exact match",
            tested["fused_distilled"]["composed"]["exact"] - best_expert,
            ">=",
            MARGIN,
        ),
    ]
    for name, curve in built["curves"].items():
        curves[f"training loss: {name}"] = curve
    return ClaimResult(
        key="unconstrained",
        claim=CARD.claim,
        paper_reported=(
            "Merging 9 reasoning-optimized LLMs (homogeneous: layer-wise merging; heterogeneous: distribution fusion)"
            " on 7 benchmarks; 'combinatorial reasoning emerges from merging which surpasses simple additive effects'"
            " (abstract; no single headline number)."
        ),
        decision_rule=(
            f"On held-out composed a*b+c problems (greedy exact match of the scratchpad completion), the layer-wise"
            f" searched merge and the fused-distilled target each beat the better expert by >= {MARGIN}."
        ),
        method=method,
        baselines=baselines,
        criteria=criteria,
        curves=curves,
        plot={"xlabel": "step / lambda / evaluation", "ylabel": "loss / validation score"},
        quick=quick,
        config={
            **asdict(recipe),
            "testbed_recipe": asdict(testbed.recipe),
            "experts_loaded_from_cache": built["loaded_from_cache"],
            "experts_build_seconds": built["build_seconds"],
            "testbed_build_seconds": testbed.build_seconds,
            "layerwise_coefficients": search.coefficients,
            "lambda_grid": list(LAMBDA_GRID),
            "ties_densities": list(TIES_DENSITIES),
            "layer_grid": list(LAYER_GRID),
            "test_sizes": {k: len(v) for k, v in test.items()},
            "val_sizes": {k: len(v) for k, v in val.items()},
            "check_seconds_without_expert_build": time.perf_counter()
            - started
            - (0.0 if built["loaded_from_cache"] else built["build_seconds"]),
        },
    )


class _ByteView(torch.nn.Module):
    """The narrow expert read in bytes: byte ids in, logits over the byte vocabulary out (aligned distribution)."""

    def __init__(self, narrow: NarrowExpert):
        super().__init__()
        self.narrow = narrow
        self.vocabulary = narrow_vocabulary()

    def forward(self, byte_ids: torch.Tensor) -> torch.Tensor:
        log_probs = self.vocabulary.to_target_log_probs(self.narrow(self.narrow.encode(byte_ids)))
        return log_probs.clamp(min=-1e9)  # -inf -> finite, so cross-entropy stays finite on unmapped bytes


def _task_vector_figures(base: StateDict, experts: Mapping[str, StateDict]) -> dict[str, float]:
    """||delta|| / ||theta_base|| of each expert and the cosine between the two task vectors (all float tensors)."""
    names = [n for n, t in base.items() if t.is_floating_point() and n != "head.weight"]  # the tied head once
    flat_base = torch.cat([base[n].reshape(-1).float() for n in names])
    deltas = {k: torch.cat([(m[n] - base[n]).reshape(-1).float() for n in names]) for k, m in experts.items()}
    out = {f"task_vector_relative_norm_{k}": float(d.norm() / flat_base.norm()) for k, d in deltas.items()}
    out["task_vector_cosine_add_mul"] = float(F.cosine_similarity(deltas["add"], deltas["mul"], dim=0))
    return out


def _flatten(figures: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {f"{kind}_{name}": value for kind, values in figures.items() for name, value in values.items()}
