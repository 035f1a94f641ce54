"""LightSeq's card, `paperzoo run` entry and claim check (quick mode: slow tier)."""

import pytest

from paperzoo.core.card import load_object
from paperzoo.core.checks import ClaimResult, run_check
from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.lightseq.card import CARD
from paperzoo.efficiency.sequence.lightseq.launch import run_lightseq


def test_card_resolves():
    assert CARD.key == "lightseq" and CARD.number == 9 and CARD.kind == "component"
    for path in (*CARD.entry_points, CARD.check, CARD.run):
        load_object(path)
    assert "tiny" in CARD.configs()


def test_run_validates_before_spawning():
    with pytest.raises(ConfigError, match="multiple of world_size"):
        run_lightseq(world_size=3, heads=8)
    with pytest.raises(ConfigError, match="must divide"):
        run_lightseq(world_size=2, heads=8, kv_heads=[3])


@pytest.mark.slow
def test_tiny_run_reports_exactness_and_bytes():
    report = run_lightseq(world_size=2, heads=4, kv_heads=[4, 1], chunk=4, head_dim=4)
    errors = [v for k, v in report.items() if k.endswith("max_abs_error")]
    assert len(errors) == 10 and max(errors) < 1e-10
    # MQA on 2 ranks: the ring moves one K/V head, head parallelism two of four query heads and the output
    assert report["P2/Hkv1/ring_full_over_head_parallel_bytes"] < 1
    assert report["P2/Hkv4/ring_full_over_head_parallel_bytes"] > 1  # MHA: the ring sends more
    assert report["checkpoint_remat/attention_forwards"] == report["checkpoint_plain/attention_forwards"] - 1


@pytest.mark.slow
def test_quick_claim_check():
    result = run_check(load_object(CARD.check), quick=True)
    assert result.key == "lightseq" and result.quick
    assert ClaimResult.from_json(result.to_json()).passed == result.passed
    exactness = result.criteria[0]
    assert exactness.passed, exactness
