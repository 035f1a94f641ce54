"""The unified view (arXiv:2302.06218): the card's tiny config through the CLI, and the claim check's measurements on
known structures, including a broken mixer that the check must catch."""

import pytest
import torch

from paperzoo.core.testing import conformance
from paperzoo.efficiency.sequence.linear_attention import LinearAttentionMixer
from paperzoo.efficiency.sequence.mixer import register_mixer
from paperzoo.efficiency.sequence.unified.card import CARD
from paperzoo.efficiency.sequence.unified.check import Variant, measure_mixer, mixer_criteria, numerical_rank

pytest.importorskip("paperzoo.efficiency.sequence.lra.listops")  # registers ListOpsDataModule with the CLI


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path / "cache"))
    CARD.import_modules()  # the task and datamodule classes resolve by short name in the config


def test_card():
    assert (CARD.key, CARD.number, CARD.arxiv, CARD.kind) == ("unified", 110, "2302.06218", "component")
    assert "tiny" in CARD.configs()


def test_tiny_config_builds_a_linear_attention_model():
    # forward/backward, loss drop and the CLI fit + checkpoint round trip run in the workspace conformance suite
    task, _ = conformance.build_from_config(CARD.config("tiny"))
    assert isinstance(task.model.blocks[0].mixer, LinearAttentionMixer)


def test_numerical_rank_by_hand():
    a, b = torch.randn(10, 3, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    assert numerical_rank(a @ b) == 3
    assert numerical_rank(torch.eye(5, dtype=torch.float64)) == 5
    assert numerical_rank(torch.zeros(4, 4, dtype=torch.float64)) == 0


def test_structure_of_known_mixers():
    linear = measure_mixer(Variant("linear", "linear_attention", {"n_heads": 4, "causal": True}, False, 4))
    assert linear["materialized max abs error"] < 1e-10 and linear["upper triangle max abs"] == 0.0
    assert linear["lower-left rank"] <= 4 and linear["input dependence (rel.)"] > 1e-3
    sgconv = Variant("sgconv", "sgconv", {"kernel_dim": 8, "max_seq_len": 64, "bidirectional": True}, True)
    figures = measure_mixer(sgconv)
    assert figures["toeplitz deviation (rel.)"] < 1e-12 and figures["input dependence (rel.)"] == 0.0
    assert figures["upper triangle max abs"] > 0  # bidirectional
    assert all(c.passed for c in mixer_criteria(sgconv, figures))


@register_mixer("unified_test_broken")
class BrokenLinearAttention(LinearAttentionMixer):
    """Claims a transposed M: its materialised view no longer matches its forward pass."""

    def mixing_matrix(self, x):
        return super().mixing_matrix(x).transpose(-1, -2)


def test_check_catches_a_wrong_mixing_matrix():
    variant = Variant("broken", "unified_test_broken", {"n_heads": 4, "causal": True}, False, 4)
    figures = measure_mixer(variant)
    failed = [c.name for c in mixer_criteria(variant, figures) if not c.passed]
    assert any("M V x - forward" in name for name in failed)
    assert any("above diagonal" in name for name in failed)
    # Claiming it is LTI fails the Toeplitz and input-independence criteria as well.
    lti = Variant("broken", "unified_test_broken", {"n_heads": 4, "causal": True}, True)
    failed = [c.name for c in mixer_criteria(lti, figures) if not c.passed]
    assert any("Toeplitz" in name for name in failed) and any("LTI" in name for name in failed)


@pytest.mark.slow
def test_quick_check_passes():
    from paperzoo.core.checks import run_check
    from paperzoo.efficiency.sequence.unified.check import check

    result = run_check(check, quick=True)
    assert result.runtime_s < 120
    assert result.passed, result.table()
