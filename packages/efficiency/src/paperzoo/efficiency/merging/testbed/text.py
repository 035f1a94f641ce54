"""The language-model track of the merging testbed: one byte-level GPT pretrained on a mix of three corpora, and one
full fine-tune of it per corpus.

Stands in for the LLM experts (math, code, chat fine-tunes of one Llama/Mistral) that DARE, ComPEFT and TIES merge:
no such weights ship offline (/work/shared/DATA.md). The corpora differ as those domains do: encyclopedic prose
(`wikipedia`), Python source (`stdlib`) and dictionary glosses (`wordnet`); see
`paperzoo.efficiency.merging.testbed.data` for their sources, splits and licences.

Recipe (`TextRecipe`, `text_testbed`): core's `GPT` (byte vocabulary of 257, tied embedding and head) pretrained
with AdamW on windows drawn equally from the three training splits, then per corpus every weight fine-tuned from
it on that corpus alone at a smaller learning rate. Evaluation uses fixed windows (`TextTestbed.windows`): evenly
spaced non-overlapping windows of `seq_len + 1` bytes of a split, the same for every model.

Measured on the full recipe (0.36M parameters; 217 s of CPU on one thread, the quick recipe 12 s): test next-byte loss
in nats on wikipedia / stdlib / wordnet: base 1.935 / 1.738 / 1.928; wikipedia expert 1.852 / 2.072 / 1.981; stdlib
expert 2.115 / 1.556 / 2.118; wordnet expert 1.998 / 2.285 / 1.830 (each expert is best on its own corpus and forgets
the others); plain average of the three experts 1.905 / 1.810 / 1.892. Task-vector cosines 0.41-0.56 (a shared "more
training" direction plus the corpus), ||tau|| / ||base|| 0.13-0.16.
"""

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError, DataError, require
from paperzoo.core.lm.data import ByteTokenizer
from paperzoo.core.lm.gpt import GPT
from paperzoo.efficiency.merging.testbed.build import (
    StateDict,
    build_lock,
    load_state,
    read_meta,
    save_state,
    testbed_dir,
    train_loop,
    write_meta,
)
from paperzoo.efficiency.merging.testbed.data import TEXT_CORPORA, load_corpus


@dataclass(frozen=True)
class TextRecipe:
    """How the text testbed is built; every field enters the cache hash.

    Args:
        corpora: the expert corpora, a subset of `TEXT_CORPORA` (pretraining always mixes all three).
        dim, n_layers, n_heads: the `GPT`'s shape.
        seq_len: T, bytes per training and evaluation window.
        batch_size: windows per step.
        pretrain_steps, pretrain_lr: AdamW steps and peak learning rate of the base (warmup, cosine decay).
        finetune_steps, lr: the same for each expert's full fine-tune.
        weight_decay: AdamW weight decay of pretraining (none while fine-tuning).
        eval_windows: fixed evaluation windows per corpus and split.
        seed: seeds the initialization and every batch.
    """

    corpora: tuple[str, ...] = TEXT_CORPORA
    dim: int = 96
    n_layers: int = 3
    n_heads: int = 4
    seq_len: int = 64
    batch_size: int = 16
    pretrain_steps: int = 1200
    pretrain_lr: float = 3e-3
    finetune_steps: int = 300
    lr: float = 5e-4
    weight_decay: float = 0.01
    eval_windows: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [c for c in self.corpora if c not in TEXT_CORPORA]
        require(not unknown, f"unknown corpora {unknown}; expected a subset of {TEXT_CORPORA}")
        require(len(self.corpora) >= 1 and len(set(self.corpora)) == len(self.corpora), "corpora must be distinct")
        require(self.dim % self.n_heads == 0, f"dim {self.dim} must divide by n_heads {self.n_heads}")
        require(self.seq_len > 0 and self.batch_size > 0, "seq_len and batch_size must be positive")
        require(self.pretrain_steps > 0 and self.finetune_steps > 0, "pretrain_steps and finetune_steps must be > 0")
        require(self.eval_windows > 0, f"eval_windows must be positive, got {self.eval_windows}")

    @classmethod
    def full(cls) -> "TextRecipe":
        """The checks' full-mode testbed (about 6 minutes on one CPU thread)."""
        return cls()

    @classmethod
    def quick(cls) -> "TextRecipe":
        """The checks' quick-mode testbed (seconds)."""
        return cls(
            dim=48,
            n_layers=2,
            seq_len=48,
            batch_size=16,
            pretrain_steps=150,
            finetune_steps=50,
            lr=1e-3,
            eval_windows=64,
        )

    @classmethod
    def tiny(cls) -> "TextRecipe":
        """Unit tests: a few seconds."""
        return cls(
            dim=16, n_layers=1, n_heads=2, seq_len=16, batch_size=4, pretrain_steps=8, finetune_steps=4, eval_windows=8
        )


def _windows(tokens: Tensor, seq_len: int, count: int) -> Tensor:
    """`count` evenly spaced non-overlapping windows of `seq_len + 1` tokens. [count, seq_len + 1]"""
    available = (len(tokens) - 1) // seq_len
    if available < 1:
        raise DataError(f"a split of {len(tokens)} tokens is shorter than one window of {seq_len + 1}")
    count = min(count, available)
    starts = torch.linspace(0, available - 1, count).round().long() * seq_len
    return torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])


def _random_windows(tokens: Tensor, seq_len: int, count: int, generator: torch.Generator) -> Tensor:
    starts = torch.randint(len(tokens) - seq_len - 1, (count,), generator=generator)
    return torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])  # [count, T + 1]


def _lm_loss(model: GPT, windows: Tensor) -> Tensor:
    logits = model(windows[:, :-1])  # [B, T, V]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


@torch.no_grad()
def _evaluate(model: GPT, windows: Tensor, chunk: int = 64) -> tuple[float, float]:
    """(mean next-byte NLL in nats, top-1 accuracy) over all positions of the windows."""
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, len(windows), chunk):
        batch = windows[start : start + chunk]
        logits = model(batch[:, :-1])
        targets = batch[:, 1:]
        total_loss += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"))
        correct += int((logits.argmax(-1) == targets).sum())
        count += targets.numel()
    return total_loss / count, correct / count


def _new_model(recipe: "TextRecipe") -> GPT:
    return GPT(ByteTokenizer.vocab_size, recipe.dim, recipe.n_layers, recipe.n_heads, max_seq_len=recipe.seq_len)


@dataclass
class TextTestbed:
    """A built text testbed (see the module docstring).

    Attributes:
        recipe: what built it.
        corpora: the expert corpora.
        base: the pretrained GPT's state dict (tied `embed.weight` and `head.weight` both present).
        experts: corpus -> the fine-tuned GPT's state dict.
        expert_loss: corpus -> test loss of that corpus's expert on its corpus.
        expert_accuracy: corpus -> test next-byte accuracy of that expert on its corpus.
        base_loss: corpus -> test loss of the base.
        loss_table: expert corpus -> (evaluated corpus -> test loss): every expert on every corpus.
        paths: "base" and each corpus -> the safetensors file.
        directory: the cache directory.
        build_seconds: wall time of the original build.
        loaded_from_cache: whether this call loaded it instead of training.
    """

    recipe: TextRecipe
    corpora: tuple[str, ...]
    base: StateDict
    experts: dict[str, StateDict]
    expert_loss: dict[str, float]
    expert_accuracy: dict[str, float]
    base_loss: dict[str, float]
    loss_table: dict[str, dict[str, float]]
    paths: dict[str, Path]
    directory: Path
    build_seconds: float
    loaded_from_cache: bool
    _windows: dict[tuple[str, str], Tensor] = field(default_factory=dict, repr=False)

    def windows(self, corpus: str, split: str = "test") -> Tensor:
        """The fixed evaluation windows of a corpus split. [N, seq_len + 1] int64"""
        if corpus not in TEXT_CORPORA:
            raise ConfigError(f"unknown corpus {corpus!r}; expected one of {TEXT_CORPORA}")
        if (corpus, split) not in self._windows:
            tokens = load_corpus(corpus, split)  # type: ignore[arg-type]
            self._windows[corpus, split] = _windows(tokens, self.recipe.seq_len, self.recipe.eval_windows)
        return self._windows[corpus, split]

    def model(self, state: Mapping[str, Tensor]) -> GPT:
        """A `GPT` of the recipe's shape holding `state`, in eval mode."""
        model = _new_model(self.recipe)
        missing, unexpected = model.load_state_dict(dict(state), strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"the state does not fit the testbed's GPT: missing {list(missing)[:3]},"
                f" unexpected {list(unexpected)[:3]}"
            )
        return model.eval()

    def loss(self, state: Mapping[str, Tensor], corpus: str, split: str = "test") -> float:
        """Mean next-byte NLL (nats) of `state` over the fixed windows of a corpus split."""
        return _evaluate(self.model(state), self.windows(corpus, split))[0]

    def accuracy(self, state: Mapping[str, Tensor], corpus: str, split: str = "test") -> float:
        """Next-byte top-1 accuracy of `state` over the fixed windows of a corpus split."""
        return _evaluate(self.model(state), self.windows(corpus, split))[1]


def _state(model: GPT) -> StateDict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _build(recipe: TextRecipe, directory: Path, progress: bool) -> None:
    start, cpu_start = time.perf_counter(), time.process_time()
    train = {c: load_corpus(c, "train") for c in TEXT_CORPORA}
    torch.manual_seed(recipe.seed)
    model = _new_model(recipe)
    generator = torch.Generator().manual_seed(recipe.seed)
    per_corpus = [recipe.batch_size // 3 + (i < recipe.batch_size % 3) for i in range(3)]

    def pretrain_loss(step: int) -> Tensor:
        # Equal shares of the three corpora in every batch: the base knows all of them.
        shares = zip(TEXT_CORPORA, per_corpus, strict=True)
        parts = [_random_windows(train[c], recipe.seq_len, n, generator) for c, n in shares if n]
        return _lm_loss(model, torch.cat(parts))

    model.train()
    train_loop(
        list(model.parameters()),
        pretrain_loss,
        recipe.pretrain_steps,
        recipe.pretrain_lr,
        weight_decay=recipe.weight_decay,
        warmup=max(1, recipe.pretrain_steps // 20),
        progress=progress,
        desc="text base",
    )
    base = _state(model)
    save_state(base, directory / "base.safetensors")

    test_windows = {c: _windows(load_corpus(c, "test"), recipe.seq_len, recipe.eval_windows) for c in TEXT_CORPORA}
    base_loss = {c: _evaluate(model.eval(), test_windows[c])[0] for c in TEXT_CORPORA}
    loss_table: dict[str, dict[str, float]] = {}
    accuracy_table: dict[str, dict[str, float]] = {}
    for index, corpus in enumerate(tqdm(recipe.corpora, desc="text experts", disable=not progress)):
        torch.manual_seed(recipe.seed * 1000 + index + 1)
        expert = _new_model(recipe)
        expert.load_state_dict(base)
        expert_generator = torch.Generator().manual_seed(recipe.seed * 1000 + index + 1)

        def finetune_loss(
            step: int, expert: GPT = expert, corpus: str = corpus, generator: torch.Generator = expert_generator
        ) -> Tensor:
            return _lm_loss(expert, _random_windows(train[corpus], recipe.seq_len, recipe.batch_size, generator))

        expert.train()
        train_loop(
            list(expert.parameters()),
            finetune_loss,
            recipe.finetune_steps,
            recipe.lr,
            warmup=max(1, recipe.finetune_steps // 10),
            progress=progress,
            desc=f"expert {corpus}",
        )
        expert.eval()
        save_state(_state(expert), directory / f"expert-{corpus}.safetensors")
        results = {c: _evaluate(expert, test_windows[c]) for c in TEXT_CORPORA}
        loss_table[corpus] = {c: r[0] for c, r in results.items()}
        accuracy_table[corpus] = {c: r[1] for c, r in results.items()}
    meta = {
        "recipe": asdict(recipe),
        "base_loss": base_loss,
        "loss_table": loss_table,
        "accuracy_table": accuracy_table,
        "build_seconds": time.perf_counter() - start,
        "build_cpu_seconds": time.process_time() - cpu_start,  # wall time on a shared machine overstates it
        "threads": torch.get_num_threads(),
    }
    write_meta(directory, meta)


def _load(recipe: TextRecipe, directory: Path, meta: dict[str, Any], loaded_from_cache: bool) -> TextTestbed:
    paths = {"base": directory / "base.safetensors"}
    paths |= {c: directory / f"expert-{c}.safetensors" for c in recipe.corpora}
    # meta.json sorts its keys; tables come back in the order of TEXT_CORPORA and the recipe.
    loss_table = {e: {c: float(meta["loss_table"][e][c]) for c in TEXT_CORPORA} for e in recipe.corpora}
    return TextTestbed(
        recipe=recipe,
        corpora=tuple(recipe.corpora),
        base=load_state(paths["base"]),
        experts={c: load_state(paths[c]) for c in recipe.corpora},
        expert_loss={c: loss_table[c][c] for c in recipe.corpora},
        expert_accuracy={c: float(meta["accuracy_table"][c][c]) for c in recipe.corpora},
        base_loss={c: float(meta["base_loss"][c]) for c in TEXT_CORPORA},
        loss_table=loss_table,
        paths=paths,
        directory=directory,
        build_seconds=float(meta["build_seconds"]),
        loaded_from_cache=loaded_from_cache,
    )


def text_testbed(recipe: TextRecipe | None = None, progress: bool = True) -> TextTestbed:
    """Load the text testbed of `recipe` (default `TextRecipe.full()`) from the cache, building it first if needed
    (under a file lock, so concurrent callers build it once).

    Args:
        recipe: the recipe; its hash names the cache directory.
        progress: show tqdm bars while building.
    """
    recipe = recipe or TextRecipe.full()
    directory = testbed_dir("text", recipe)
    meta = read_meta(directory)
    if meta is not None:
        return _load(recipe, directory, meta, loaded_from_cache=True)
    with build_lock(directory):
        meta = read_meta(directory)
        loaded = meta is not None
        if meta is None:
            # One intra-op thread: the same tensors on every machine, and no spinning OpenMP threads on shared cores.
            # fork_rng: the build seeds torch's global generator; the caller's stream is left as it was.
            with torch_threads(1), torch.random.fork_rng(devices=[]):
                _build(recipe, directory, progress)
            meta = read_meta(directory)
            assert meta is not None
    return _load(recipe, directory, meta, loaded_from_cache=loaded)
