"""LRA ListOps: the generator's grammar and labels (against an independent evaluator), its length limits and split
hygiene, and the release TSV loader on a fixture in the exact release format."""

import random
from pathlib import Path

import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.efficiency.sequence.lra.listops import (
    VOCAB,
    ListOpsDataModule,
    evaluate,
    generate_expression,
    to_release_string,
    tokenize,
)

FIXTURES = Path(__file__).parent / "fixtures" / "lra" / "listops"
SYMBOL = {i: s for s, i in VOCAB.items()}


def reference_value(source: str) -> int:
    """An independent evaluator of the release's bracketed strings: recursive descent over the S-expression form,
    median of an even count = floor of the mean of the two middle values (what int(np.median) gives)."""
    symbols = [s for s in source.replace("(", " ").replace(")", " ").split()]

    def parse(i: int) -> tuple[int, int]:
        if symbols[i].isdigit():
            return int(symbols[i]), i + 1
        op, i, args = symbols[i], i + 1, []
        while symbols[i] != "]":
            value, i = parse(i)
            args.append(value)
        args.sort()
        n = len(args)
        value = {
            "[MAX": args[-1],
            "[MIN": args[0],
            "[SM": sum(args) % 10,
            "[MED": (args[(n - 1) // 2] + args[n // 2]) // 2,
        }[op]
        return value, i + 1

    value, end = parse(0)
    assert end == len(symbols)
    return value


def decode(row: torch.Tensor) -> list[str]:
    return [SYMBOL[int(t)] for t in row if int(t) != 0]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))


def test_hand_computed_values():
    assert reference_value("( ( ( [MAX 2 ) 9 ) ] )") == 9
    assert evaluate(["[MED", "1", "8", "3", "]"]) == 3
    assert evaluate(["[MED", "9", "8", "]"]) == 8  # int(np.median([9, 8])) = int(8.5)
    assert evaluate(["[SM", "7", "5", "[MIN", "4", "6", "]", "]"]) == 6
    assert evaluate(["[MAX", "1", "[MIN", "9", "[MED", "2", "7", "4", "9", "]", "]", "3", "]"]) == 5
    assert to_release_string(["[MAX", "2", "9", "]"]) == "( ( ( [MAX 2 ) 9 ) ] )"


def test_generated_labels_match_an_independent_evaluator():
    rng = random.Random(3)
    checked = 0
    for _ in range(400):
        symbols = generate_expression(rng, max_depth=6, max_args=6)
        assert tokenize(to_release_string(symbols)) == symbols
        assert evaluate(symbols) == reference_value(to_release_string(symbols))
        checked += len(symbols) > 1
    assert checked > 50


def test_grammar_limits_hold():
    rng = random.Random(1)
    for _ in range(300):
        symbols = generate_expression(rng, max_depth=3, max_args=4)
        depth = max_depth = 0
        args: list[int] = []
        for s in symbols:
            if s.startswith("["):
                if args:
                    args[-1] += 1
                depth += 1
                max_depth = max(max_depth, depth)
                args.append(0)
            elif s == "]":
                assert 2 <= args.pop() <= 4
                depth -= 1
            elif args:
                args[-1] += 1
        assert max_depth <= 2  # operators only above max_depth (depth 1 and 2); depth 3 is always a digit


def test_datamodule_splits_lengths_labels(cache):
    dm = ListOpsDataModule(num_train=300, num_val=60, num_test=60, min_length=8, max_length=48, seed=5)
    assert (dm.vocab_size, dm.num_classes, dm.seq_len) == (16, 10, 48)
    dm.setup()
    splits = dm.cached_build()
    seen = set()
    for name, size in (("train", 300), ("val", 60), ("test", 60)):
        tokens, labels = splits[name]["tokens"], splits[name]["label"]
        assert tokens.shape == (size, 48) and labels.shape == (size,)
        lengths = (tokens != 0).sum(1)
        assert bool(((lengths > 8) & (lengths < 48)).all())
        # padding only at the end
        assert bool(((tokens != 0).long().diff(dim=1) <= 0).all())
        rows = {tuple(r.tolist()) for r in tokens}
        assert len(rows) == size and not rows & seen  # unique within and across splits
        seen |= rows
        for row, label in zip(tokens, labels, strict=True):
            assert reference_value(" ".join(decode(row))) == int(label)
    all_labels = torch.cat([splits[s]["label"] for s in ("train", "val", "test")])
    assert len(all_labels.unique()) == 10  # every class occurs
    # deterministic from the seed, different for another seed
    again = ListOpsDataModule(num_train=300, num_val=60, num_test=60, min_length=8, max_length=48, seed=5).build()
    assert torch.equal(again["test"]["tokens"], splits["test"]["tokens"])
    other = ListOpsDataModule(num_train=300, num_val=60, num_test=60, min_length=8, max_length=48, seed=6).build()
    assert not torch.equal(other["test"]["tokens"], splits["test"]["tokens"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == (32, 48) and batch["mask"].dtype == torch.bool


def test_release_tsv_loader(cache):
    dm = ListOpsDataModule(path=str(FIXTURES), max_length=40, batch_size=4)
    dm.setup()
    train = dm.train_set.fields
    assert train["tokens"].shape == (12, 40)
    assert decode(train["tokens"][0]) == ["[MAX", "2", "9", "]"] and int(train["label"][0]) == 9
    for split in ("train", "val", "test"):
        fields = dm.cached_build()[split]
        for row, label in zip(fields["tokens"], fields["label"], strict=True):
            assert reference_value(" ".join(decode(row))) == int(label)
    # truncation to max_length, as the LRA input pipeline does
    short = ListOpsDataModule(path=str(FIXTURES), min_length=0, max_length=6).build()["train"]["tokens"]
    assert short.shape[1] == 6 and bool((short[:, :3] != 0).all())


def test_bad_inputs_are_named(cache, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ListOpsDataModule(path=str(tmp_path / "nowhere")).build()
    (tmp_path / "basic_train.tsv").write_text("Source\tTarget\n( ( [FOO 1 ) ] )\t3\n")
    with pytest.raises(DataError, match="basic_train.tsv line 2"):
        ListOpsDataModule(path=str(tmp_path)).build()
    (tmp_path / "basic_train.tsv").write_text("Src\tTgt\n")
    with pytest.raises(DataError, match="header"):
        ListOpsDataModule(path=str(tmp_path)).build()
    with pytest.raises(ConfigError, match="min_length"):
        ListOpsDataModule(min_length=50, max_length=40)
    with pytest.raises(DataError, match="unique expressions"):
        ListOpsDataModule(num_train=4, num_val=1, num_test=1, min_length=2, max_length=5, max_depth=1).build()
