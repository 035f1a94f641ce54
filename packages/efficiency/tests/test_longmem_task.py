"""LongMem's task and card: the tiny config trains through the conformance helpers, the backbone stays frozen
through an optimizer step, recall figures by hand, and the quick claim check runs (slow tier)."""

import pytest
import torch

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError
from paperzoo.core.testing import conformance
from paperzoo.efficiency.sequence.longmem.card import CARD
from paperzoo.efficiency.sequence.longmem.task import LongMemTask, recall_figures


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread (two spinning threads on a shared 2-core machine were 20x slower here)."""
    with torch_threads(1):
        yield


def test_recall_figures_by_hand():
    logits = torch.zeros(1, 4, 257)
    tokens = torch.tensor([[10, 49, 50, 51, 52]])  # targets 49 50 51 52 ("1234")
    mask = torch.tensor([[True, True, False, False]])
    logits[0, 0, 49] = 5.0  # right
    logits[0, 1, 48] = 5.0  # wrong
    figures = recall_figures(logits, {"tokens": tokens, "value_mask": mask}, value_digits=2)
    assert float(figures["acc"]) == 0.5 and float(figures["exact"]) == 0.0 and int(figures["values"]) == 2


@pytest.fixture(scope="module")
def tiny():
    task, data = conformance.build_from_config(CARD.config("tiny"))
    return task, data, conformance.first_train_batch(data)


def test_card_and_tiny_config(tiny):
    task, data, batch = tiny
    assert CARD.key == "longmem" and CARD.number == 119 and CARD.kind == "train"
    assert isinstance(task, LongMemTask) and set(CARD.configs()) >= {"tiny"}
    assert batch["tokens"].shape == (4, 8 * 32 + 1) and batch["value_mask"].sum() == 4 * 2 * 4


def test_tiny_task_trains_and_keeps_the_backbone_frozen(tiny):
    task, _, batch = tiny
    before = {name: p.clone() for name, p in task.model.backbone.named_parameters()}
    conformance.check_forward_backward(task, batch)
    conformance.check_loss_drops(task, batch, steps=10)
    for name, p in task.model.backbone.named_parameters():
        assert torch.equal(p, before[name]) and not p.requires_grad, name
    assert task.num_parameters() > sum(p.numel() for p in task.parameters() if p.requires_grad)


def test_task_rejects_a_non_byte_vocabulary():
    with pytest.raises(ConfigError, match="vocab_size"):
        LongMemTask(vocab_size=2048)


@pytest.mark.slow
def test_quick_claim_check_runs():
    from paperzoo.efficiency.sequence.longmem.check import check

    result = check(quick=True)
    assert result.key == "longmem" and len(result.criteria) == 3
    assert {"recall", "lm_loss", "exact"} <= set(result.method)
