"""The Mamba paper's synthetic diagnostics: selective copying and induction heads (per-position targets).

"Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (Gu and Dao, arXiv:2312.00752), Section 4.1 and
Appendix E.1, where both tasks separate selective (input-dependent) from LTI sequence models:

- Selective copying (Figure 2, Table 1): M data tokens are scattered at random, sorted positions among noise tokens
  in a context of M + L positions, followed by M marker tokens; at each marker the model outputs the next data token
  in order. The paper uses L = 4096, M = 16 and an alphabet of 16 symbols (noise and marker included: 14 data
  symbols), as the reference generator `torch_copying_data(L, M, A, variable=True)` of the S4 repository builds it.
- Induction heads (Table 2): random tokens with one special trigger token placed at a random position; the token
  after it is the value; the sequence ends with the trigger again and the model must output that value (the
  "Harry Potter ... Harry -> Potter" associative recall). The paper trains at length 256 with vocabulary 16 and
  tests on lengths 2^6 to 2^20; here `test_seq_len` sets the (extrapolation) length of the test split, the
  validation split keeps the training length.

Both build finite seeded splits (the paper draws fresh batches every step: a large `num_train` approximates that).
Token ids follow the family's convention that 0 is padding: noise = 1, data symbols 2 .. A - 1, marker = A for
selective copying; ordinary symbols 1 .. V - 1 and trigger = V for induction heads. Targets are the symbol's index
(0-based class id), -100 at every position without a target. Defaults are scaled for a 2-core CPU; the paper's
settings are `SelectiveCopyingDataModule(num_noise=4096, num_tokens=16, alphabet=16)` and
`InductionHeadsDataModule(seq_len=256, vocab=16)`.
"""

import torch

from paperzoo.core.errors import require
from paperzoo.efficiency.sequence.lra.base import SequenceDataModule, Split
from paperzoo.efficiency.sequence.task import IGNORE_INDEX

NOISE = 1  # selective copying's blank/noise token (0 stays padding)


def selective_copying(count: int, num_noise: int, num_tokens: int, alphabet: int, generator: torch.Generator) -> Split:
    """`count` selective-copying samples: tokens and targets [count, num_noise + 2 * num_tokens] int64.

    Data tokens are uniform over the alphabet - 2 data symbols (ids 2 .. alphabet - 1), at `num_tokens` distinct
    sorted positions among the first num_noise + num_tokens; the marker is id `alphabet`.
    """
    context = num_noise + num_tokens
    symbols = torch.randint(0, alphabet - 2, (count, num_tokens), generator=generator)  # class ids
    positions = torch.rand(count, context, generator=generator).argsort(1)[:, :num_tokens].sort(1).values
    tokens = torch.full((count, context + num_tokens), NOISE, dtype=torch.long)
    tokens.scatter_(1, positions, symbols + 2)
    tokens[:, context:] = alphabet  # markers
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, context:] = symbols
    return {"tokens": tokens, "targets": targets}


def induction_heads(count: int, seq_len: int, vocab: int, generator: torch.Generator) -> Split:
    """`count` induction-head samples: tokens and targets [count, seq_len] int64.

    Ordinary symbols are ids 1 .. vocab - 1 (class id = id - 1); the trigger (id `vocab`) sits at a uniform
    position p in [0, seq_len - 3] and at the last position; the target at the last position is the class of
    the token at p + 1. The trigger occurs exactly twice.
    """
    tokens = torch.randint(1, vocab, (count, seq_len), generator=generator)
    first = torch.randint(0, seq_len - 2, (count,), generator=generator)
    rows = torch.arange(count)
    tokens[rows, first] = vocab
    tokens[:, -1] = vocab
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, -1] = tokens[rows, first + 1] - 1
    return {"tokens": tokens, "targets": targets}


class SelectiveCopyingDataModule(SequenceDataModule):
    """Selective copying (Mamba, Section 4.1.1). seq_len = num_noise + 2 * num_tokens.

    Args:
        num_noise: L, noise positions in the context (paper: 4096).
        num_tokens: M, data tokens to copy (paper: 16).
        alphabet: A, symbols including noise and marker (paper: 16): A - 2 data symbols = `num_classes`.
        num_train, num_val, num_test: samples per split.
        path, batch_size, num_workers, seed: see `SequenceDataModule` (`path` is unused: the data is generated).
    """

    def __init__(
        self,
        num_noise: int = 48,
        num_tokens: int = 8,
        alphabet: int = 16,
        num_train: int = 16384,
        num_val: int = 512,
        num_test: int = 1024,
        path: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, seed=seed)
        require(num_noise >= 0, f"num_noise must be >= 0, got {num_noise}")
        require(num_tokens >= 1, f"num_tokens must be >= 1, got {num_tokens}")
        require(alphabet >= 4, f"alphabet must be >= 4 (noise, marker and two data symbols), got {alphabet}")
        require(min(num_train, num_val, num_test) > 0, "num_train, num_val and num_test must be > 0")
        self.save_hyperparameters()
        self.vocab_size = alphabet + 1  # + padding id 0
        self.num_classes = alphabet - 2
        self.seq_len = num_noise + 2 * num_tokens

    def build(self) -> dict[str, Split]:
        h = self.hparams
        sizes = {"train": h.num_train, "val": h.num_val, "test": h.num_test}
        return {
            name: selective_copying(
                count, h.num_noise, h.num_tokens, h.alphabet, torch.Generator().manual_seed(h.seed * 3 + index)
            )
            for index, (name, count) in enumerate(sizes.items())
        }


class InductionHeadsDataModule(SequenceDataModule):
    """Induction heads (Mamba, Section 4.1.2): recall the token that followed the trigger's first occurrence.

    Args:
        seq_len: training (and validation) length (paper: 256).
        vocab: symbols including the trigger (paper: 16): vocab - 1 ordinary symbols = `num_classes`.
        test_seq_len: length of the test split (None: seq_len); longer tests extrapolation as in the paper's Table 2.
        num_train, num_val, num_test: samples per split.
        path, batch_size, num_workers, seed: see `SequenceDataModule` (`path` is unused: the data is generated).
    """

    def __init__(
        self,
        seq_len: int = 64,
        vocab: int = 16,
        test_seq_len: int | None = None,
        num_train: int = 16384,
        num_val: int = 512,
        num_test: int = 1024,
        path: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, seed=seed)
        require(seq_len >= 3, f"seq_len must be >= 3 (trigger, value, trigger), got {seq_len}")
        require(test_seq_len is None or test_seq_len >= 3, f"test_seq_len must be >= 3, got {test_seq_len}")
        require(vocab >= 3, f"vocab must be >= 3 (a trigger and two symbols), got {vocab}")
        require(min(num_train, num_val, num_test) > 0, "num_train, num_val and num_test must be > 0")
        self.save_hyperparameters()
        self.vocab_size = vocab + 1  # + padding id 0
        self.num_classes = vocab - 1
        self.seq_len = seq_len

    def build(self) -> dict[str, Split]:
        h = self.hparams
        plan = {
            "train": (h.num_train, h.seq_len),
            "val": (h.num_val, h.seq_len),
            "test": (h.num_test, h.test_seq_len or h.seq_len),
        }
        return {
            name: induction_heads(count, length, h.vocab, torch.Generator().manual_seed(h.seed * 3 + index))
            for index, (name, (count, length)) in enumerate(plan.items())
        }
