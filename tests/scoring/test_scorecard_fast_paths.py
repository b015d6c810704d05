"""The optimised ``score_conversations`` gives exactly the per-finding reference's scores and trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reference_score import ref_score_conversations

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.scoring.scorecard import (
    N_AGENT_MESSAGES,
    PRESALE_INTENT,
    TIMED,
    Scorecard,
    load_scorecard,
    score_conversations,
)

RULES = ["KB-PRICE-001", "KB-STOCK-002", "MODEL:negative_tone", "MODEL:empathy", "ATT-001", "ATT-INSULT-001",
         "ATT-101", "SEL-001", "SEL-008", "RSP-001", "RSP-002", "TPL-001"]
DIMS = [*S.DIMENSIONS, "other"]  # an unknown dimension must be skipped the same way
SEVERITIES = ["info", "minor", "major", "critical"]


def random_case(seed: int, n_conv: int = 120) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in range(n_conv)]
    shops = ["s1", "s2", "s3"]
    shop_of = {c: shops[rng.integers(3)] for c in ids}
    recs = []
    for cid in ids:
        for _ in range(int(rng.integers(0, 16))):
            rule = RULES[rng.integers(len(RULES))]
            conf = float("nan") if rng.random() < 0.1 else float(rng.uniform(0.2, 1.0))
            recs.append({
                S.CONVERSATION_ID: cid, S.SHOP_ID: shop_of[cid], S.AGENT_ID: f"a{rng.integers(4)}",
                S.MESSAGE_INDEX: int(rng.integers(-1, 25)), S.RULE_ID: rule,
                S.DIMENSION: DIMS[rng.integers(len(DIMS))] if rng.random() < 0.97 else "other",
                S.POLARITY: "+" if rng.random() < 0.35 else "-",
                S.SEVERITY: SEVERITIES[rng.integers(4)], S.POINTS: float(rng.integers(0, 30)),
                S.EVIDENCE: "证据", S.EVIDENCE_START: 0, S.EVIDENCE_END: 2, S.EXPLANATION: f"{rule} hit",
                S.SOURCE: "model" if rule.startswith("MODEL") else ("knowledge" if rule.startswith("KB")
                                                                   else "rule"),
                S.CONFIDENCE: conf,
            })
    findings = S.findings_frame(recs).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    conv = pd.DataFrame({S.CONVERSATION_ID: ids, S.SHOP_ID: [shop_of[c] for c in ids],
                         PRESALE_INTENT: rng.random(n_conv) < 0.5, TIMED: rng.random(n_conv) < 0.7,
                         N_AGENT_MESSAGES: rng.integers(0, 3, n_conv)})
    return conv, findings


def capped_card() -> Scorecard:
    """Tight caps so item, dimension and range capping all happen often."""
    return Scorecard.model_validate({
        "dimensions": {
            "product_knowledge": {"weight": 0.4, "base": 100, "max_deduction": 50, "max_bonus": 5},
            "selling": {"weight": 0.2, "base": 80, "max_deduction": 30, "max_bonus": 40},
            "attitude": {"weight": 0.3, "base": 100, "max_deduction": 120, "max_bonus": 10},
            "responsiveness": {"weight": 0.1, "base": 90, "max_deduction": 100, "max_bonus": 30},
        },
        "items": [
            {"id": "veto", "select": {"rules": ["ATT-INSULT*"]}, "veto": True},
            {"id": "kb", "select": {"rules": ["KB-*"], "polarity": "-"}, "multiplier": 2, "max_points": 30},
            {"id": "model", "select": {"sources": ["model"]}, "max_points": 8},
            {"id": "major", "select": {"severities": ["major", "critical"]}, "points": 7, "multiplier": 3},
            {"id": "minus", "select": {"polarity": "-"}, "max_points": 40},
            {"id": "plus", "select": {"polarity": "+", "dimensions": ["selling", "responsiveness"]}},
        ],
        "grades": [{"label": "优秀", "min": 90}, {"label": "合格", "min": 75}, {"label": "不合格", "min": 0}],
        "shop_weights": {"s2": {"selling": 0.5}},
    })


def _check(conv: pd.DataFrame, findings: pd.DataFrame, card: Scorecard, shops: dict[str, Shop],
           veto_rules: set[str]) -> pd.DataFrame:
    scores, trace = score_conversations(conv, findings, card, shops, veto_rules=veto_rules)
    ref_scores, ref_trace = ref_score_conversations(conv, findings, card, shops, veto_rules=veto_rules)
    pd.testing.assert_frame_equal(scores, ref_scores)
    pd.testing.assert_frame_equal(trace, ref_trace)
    return trace


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_capped_card_matches_reference(seed: int) -> None:
    conv, findings = random_case(seed)
    shops = {"s3": Shop(shop_id="s3", name="三号店", platform="tmall", scorecard_weights={"attitude": 0.9})}
    trace = _check(conv, findings, capped_card(), shops, {"RSP-002"})
    assert set(trace["capped_by"]) >= {"", "item", "dimension", "range"}  # every cap path exercised
    assert trace["veto"].any()


def test_bundled_card_matches_reference(rules_dir: Path) -> None:
    conv, findings = random_case(7, n_conv=200)
    _check(conv, findings, load_scorecard(rules_dir), {}, {"ATT-INSULT-001", "TPL-001"})


def test_no_findings_matches_reference(rules_dir: Path) -> None:
    conv, findings = random_case(3, n_conv=10)
    _check(conv, findings.iloc[0:0], load_scorecard(rules_dir), {}, set())


def test_repeated_and_unknown_conversations_match_reference(rules_dir: Path) -> None:
    """A conversation id listed twice gets its findings twice; findings of unknown ids are ignored."""
    conv, findings = random_case(11, n_conv=40)
    conv = pd.concat([conv, conv.iloc[[3, 7, 7]]], ignore_index=True)
    orphan = findings.iloc[:5].copy()
    orphan[S.CONVERSATION_ID] = "not-here"
    findings = pd.concat([findings, orphan], ignore_index=True)
    trace = _check(conv, findings, capped_card(), {}, {"RSP-002"})
    cid = conv[S.CONVERSATION_ID].iloc[3]
    per_copy = int((findings[S.CONVERSATION_ID] == cid).sum())
    assert per_copy > 0 and int((trace[S.CONVERSATION_ID] == cid).sum()) > 0
    _check(conv, findings, load_scorecard(rules_dir), {}, set())


def test_float_message_index_and_ties_match_reference() -> None:
    """Message order by int(message_index), then rule id, then row, whatever the column's dtype."""
    conv, findings = random_case(12, n_conv=30)
    findings[S.MESSAGE_INDEX] = findings[S.MESSAGE_INDEX] % 3  # many ties on (message, rule)
    _check(conv, findings, capped_card(), {}, {"ATT-001"})
    as_float = findings.astype({S.MESSAGE_INDEX: "float64"})
    as_float[S.MESSAGE_INDEX] = as_float[S.MESSAGE_INDEX] + 0.25
    s1, t1 = score_conversations(conv, as_float, capped_card(), {}, veto_rules={"ATT-001"})
    s2, t2 = ref_score_conversations(conv, as_float, capped_card(), {}, veto_rules={"ATT-001"})
    pd.testing.assert_frame_equal(s1, s2)
    pd.testing.assert_frame_equal(t1, t2)


def test_cap_in_order_is_the_running_loop() -> None:
    """The rank-by-rank cap equals the per-element loop, bit for bit, on awkward floats."""
    from qa_inspect.scoring.scorecard import _cap_in_order

    rng = np.random.default_rng(0)
    n = 500
    groups = rng.integers(0, 40, n)
    values = rng.uniform(0, 3, n) * rng.choice([0.1, 1 / 3, 0.7, 1.0], n)
    caps = np.array([0.0, 0.3, 2.2, 7.0, 1e9])[groups % 5]
    got, hit = _cap_in_order(values, groups, caps)
    used: dict[int, float] = {}
    for i in range(n):
        g = int(groups[i])
        left = max(float(caps[i]) - used.get(g, 0.0), 0.0)
        v = float(values[i])
        assert bool(hit[i]) == (v > left)
        v = left if v > left else v
        assert got[i] == v
        used[g] = used.get(g, 0.0) + v
    assert hit.any() and not hit.all()
