"""SelfPretrainTask and fine-tuning from it: objective choice, the losses by hand, weight transfer, errors."""

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.lra.base import SequenceDataModule
from paperzoo.efficiency.sequence.spt import FinetuneClassificationTask, SelfPretrainTask, load_pretrained_backbone
from paperzoo.efficiency.sequence.spt.objectives import content_seed
from paperzoo.efficiency.sequence.task import SequenceClassificationTask

# outside a Trainer `self.log` only warns; these tests call `step` directly
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")

V = 7
SIZE = {"dim": 16, "depth": 2, "mlp_ratio": 1.0}
BIDIRECTIONAL = {"n_heads": 2, "causal": False}


def tokens_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (4, 12), generator=generator)
    tokens[1, 8:] = 0  # padding
    tokens[3, 5:] = 0
    return {"tokens": tokens, "mask": tokens != 0, "label": torch.tensor([0, 1, 2, 1])}


class ToyDataModule(SequenceDataModule):
    """A small classification set: label = first token mod 3 (a stand-in for the LRA datamodules)."""

    def __init__(self, size: int = 64, seq_len: int = 12, batch_size: int = 8):
        super().__init__(batch_size=batch_size)
        self.save_hyperparameters()
        self.vocab_size, self.num_classes, self.seq_len = V, 3, seq_len

    def build(self):
        generator = torch.Generator().manual_seed(0)
        splits = {}
        for name in ("train", "val", "test"):
            tokens = torch.randint(1, V, (self.hparams.size, self.hparams.seq_len), generator=generator)
            splits[name] = {"tokens": tokens, "label": tokens[:, 0] % 3}
        return splits


def test_objective_follows_the_backbone_causality():
    assert SelfPretrainTask(V, mixer_args=BIDIRECTIONAL, **SIZE).objective == "masked"
    assert SelfPretrainTask(V, mixer_args={"causal": True}, **SIZE).objective == "causal"
    assert SelfPretrainTask(V, mixer_args={"causal": True}, objective="masked", **SIZE).objective == "masked"
    with pytest.raises(ConfigError, match="causal objective needs a causal backbone"):
        SelfPretrainTask(V, mixer_args=BIDIRECTIONAL, objective="causal", **SIZE)
    with pytest.raises(ConfigError, match="objective"):
        SelfPretrainTask(V, objective="span", **SIZE)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mask_rate"):
        SelfPretrainTask(V, mask_rate=1.0, **SIZE)


def test_mask_token_has_its_own_embedding_row_and_head_predicts_data_ids():
    task = SelfPretrainTask(V, mixer_args=BIDIRECTIONAL, **SIZE)
    assert task.model.embedding.num_embeddings == V + 1 and task.mask_token == V
    assert task.lm_head.out_features == V


def test_causal_loss_is_next_token_cross_entropy_by_hand():
    torch.manual_seed(0)
    task = SelfPretrainTask(V, mixer_args={"causal": True}, **SIZE).eval()
    batch = tokens_batch()
    loss = task.step(batch, "train")
    logits = task(batch["tokens"])  # the causal objective feeds the tokens unchanged
    terms = []
    for b, row in enumerate(batch["tokens"].tolist()):
        for i in range(len(row) - 1):
            if row[i + 1] != 0:  # position i predicts token i + 1; padding is never a target
                terms.append(-F.log_softmax(logits[b, i], -1)[row[i + 1]])
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-6)


def test_masked_loss_only_on_masked_positions_by_hand():
    torch.manual_seed(0)
    task = SelfPretrainTask(V, mixer_args=BIDIRECTIONAL, mask_rate=0.3, **SIZE).eval()
    batch = tokens_batch()
    tokens = batch["tokens"]
    loss = task.step(batch, "val")  # validation masks are fixed by the batch's content
    draws = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(content_seed(tokens, 0)))
    masked = (draws < 0.3) & (tokens != 0)
    assert masked.any() and not masked[tokens == 0].any()
    inputs = tokens.masked_fill(masked, V)
    logits = task(inputs)
    expected = torch.stack(
        [-F.log_softmax(logits[b, i], -1)[tokens[b, i]] for b, i in masked.nonzero().tolist()]
    ).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.equal(task.predict_step(batch, 0), logits.argmax(-1))


def test_loss_drops_on_a_fixed_batch():
    torch.manual_seed(0)
    with torch_threads(1):
        for mixer_args in (BIDIRECTIONAL, {"causal": True}):
            task = SelfPretrainTask(V, mixer_args=mixer_args, **SIZE)
            batch = tokens_batch()
            optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
            with torch.no_grad():
                before = float(task.step(batch, "val"))  # fixed masks: the same positions every step
            for _ in range(15):
                optimizer.zero_grad()
                task.step(batch, "val").backward()
                optimizer.step()
            with torch.no_grad():
                assert float(task.step(batch, "val")) < before - 0.3


def test_backbone_transferred_head_fresh(tmp_path):
    torch.manual_seed(0)
    pretrain = SelfPretrainTask(V, mixer_args=BIDIRECTIONAL, **SIZE)
    with torch.no_grad():
        for p in pretrain.parameters():
            p.add_(torch.randn_like(p))  # far from any initialisation
    path = tmp_path / "pretrain.ckpt"
    torch.save({"state_dict": pretrain.state_dict(), "hyper_parameters": dict(pretrain.hparams)}, path)
    task = FinetuneClassificationTask(V, 3, mixer_args=BIDIRECTIONAL, pretrained=str(path), **SIZE)
    head = {k: v.clone() for k, v in task.head.state_dict().items()}
    assert not torch.equal(task.model.blocks[0].mixer.qkv.weight, pretrain.model.blocks[0].mixer.qkv.weight)
    task.setup("fit")  # a fresh fit loads the backbone
    own, source = task.model.state_dict(), pretrain.model.state_dict()
    for key, value in own.items():
        expected = source[key][:V] if key == "embedding.weight" else source[key]  # the mask token's row is dropped
        assert torch.equal(value, expected), key
    assert all(torch.equal(task.head.state_dict()[k], v) for k, v in head.items()), "the head must start fresh"
    task.setup("validate")  # only fit loads
    # from a module or a state dict, and through from_pretrained
    other = SequenceClassificationTask(V, 3, mixer_args=BIDIRECTIONAL, **SIZE)
    load_pretrained_backbone(other.model, pretrain)
    assert torch.equal(other.model.blocks[1].mlp.down.weight, pretrain.model.blocks[1].mlp.down.weight)
    loaded = FinetuneClassificationTask.from_pretrained(
        path, vocab_size=V, num_classes=3, mixer_args=BIDIRECTIONAL, **SIZE
    )
    assert torch.equal(loaded.model.norm.weight, pretrain.model.norm.weight)


def test_shape_mismatch_names_the_file_and_parameter(tmp_path):
    pretrain = SelfPretrainTask(V, mixer_args=BIDIRECTIONAL, **SIZE)
    path = tmp_path / "pretrain.ckpt"
    torch.save({"state_dict": pretrain.state_dict()}, path)
    wider = FinetuneClassificationTask(V, 3, mixer_args=BIDIRECTIONAL, pretrained=str(path), dim=32, depth=2)
    with pytest.raises(ConfigError, match=r"pretrain\.ckpt.*'embedding\.weight' has shape \(8, 16\)"):
        wider.setup("fit")
    deeper = FinetuneClassificationTask(V, 3, mixer_args=BIDIRECTIONAL, dim=16, depth=3, mlp_ratio=1.0)
    with pytest.raises(ConfigError, match=r"pretrain\.ckpt.*missing \['blocks\.2"):
        load_pretrained_backbone(deeper.model, path)
    other_vocab = FinetuneClassificationTask(V + 3, 3, mixer_args=BIDIRECTIONAL, **SIZE)
    with pytest.raises(ConfigError, match="embedding"):
        load_pretrained_backbone(other_vocab.model, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_pretrained_backbone(wider.model, tmp_path / "missing.ckpt")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="broken.ckpt.*not a readable"):
        load_pretrained_backbone(wider.model, broken)


def test_pretrain_then_finetune_with_the_harness(tmp_path, monkeypatch):
    from paperzoo.efficiency.sequence.harness import train_and_evaluate

    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    torch.manual_seed(0)
    data = ToyDataModule()
    pretrain = SelfPretrainTask(V, mixer_args=BIDIRECTIONAL, **SIZE)
    figures = train_and_evaluate(pretrain, data, max_steps=3, measure_memory=False)
    assert figures.steps == 3 and 0.0 <= figures.accuracy <= 1.0
    task = FinetuneClassificationTask(V, 3, mixer_args=BIDIRECTIONAL, **SIZE)
    load_pretrained_backbone(task.model, pretrain)
    assert torch.equal(task.model.blocks[0].mixer.qkv.weight, pretrain.model.blocks[0].mixer.qkv.weight)
    assert train_and_evaluate(task, data, max_steps=3, measure_memory=False).steps == 3
