"""combine(): agreement raises confidence, model-only hits count less, disagreements go to review."""

from __future__ import annotations

import pandas as pd
import pytest

from qa_inspect import schema
from qa_inspect.models.combine import REVIEW_COLUMNS, combine
from qa_inspect.models.thresholds import ModelsConfig


@pytest.fixture()
def config() -> ModelsConfig:
    return ModelsConfig.model_validate({
        "acts": {"negative_tone": {"threshold": 0.7, "dimension": "attitude", "polarity": "-",
                                   "severity": "major", "points": 5}},
        "combine": {"model_only_threshold": 0.85, "model_only_factor": 0.5, "agree_above": 0.5,
                    "disagree_below": 0.1,
                    "links": [{"dimension": "attitude", "polarity": "-", "acts": ["negative_tone"]},
                              {"rule_ids": ["SEL-001"], "acts": ["proactive_selling"]}]},
    })


def finding(seq: int, rule_id: str, *, source: str = "rule", dim: str = "attitude", pol: str = "-",
            conf: float = 1.0, points: float = 5.0, cid: str = "c:1") -> dict:
    return {schema.CONVERSATION_ID: cid, schema.SHOP_ID: "s", schema.AGENT_ID: "a", schema.MESSAGE_INDEX: seq,
            schema.RULE_ID: rule_id, schema.DIMENSION: dim, schema.POLARITY: pol, schema.SEVERITY: "major",
            schema.POINTS: points, schema.EVIDENCE: "x", schema.EVIDENCE_START: 0, schema.EVIDENCE_END: 1,
            schema.EXPLANATION: "e", schema.SOURCE: source, schema.CONFIDENCE: conf}


def acts_frame(rows: dict[int, dict[str, float]], cid: str = "c:1") -> pd.DataFrame:
    recs = []
    for seq, probs in rows.items():
        rec = {schema.CONVERSATION_ID: cid, schema.SEQ: seq}
        rec.update({schema.act_column(a): probs.get(a, 0.0) for a in schema.ACT_LABELS})
        recs.append(rec)
    return pd.DataFrame(recs)


def test_agreement_raises_confidence_and_absorbs_model_hit(config: ModelsConfig) -> None:
    rules = schema.findings_frame([finding(1, "ATT-001", conf=0.8)])
    model = schema.findings_frame([finding(1, "MODEL:negative_tone", source="model", conf=0.9)])
    out, review = combine(rules, model, acts_frame({1: {"negative_tone": 0.9}}), config)
    assert review.empty
    assert list(out[schema.RULE_ID]) == ["ATT-001"]  # not counted twice
    assert out[schema.CONFIDENCE].iloc[0] == pytest.approx(1 - 0.2 * 0.1)
    assert "model agrees" in out[schema.EXPLANATION].iloc[0]


def test_model_only_hit_counts_with_lower_weight(config: ModelsConfig) -> None:
    model = schema.findings_frame([finding(3, "MODEL:negative_tone", source="model", conf=0.95, points=5),
                                   finding(5, "MODEL:negative_tone", source="model", conf=0.75, points=5)])
    out, review = combine(schema.empty_findings(), model,
                          acts_frame({3: {"negative_tone": 0.95}, 5: {"negative_tone": 0.75}}), config)
    assert review.empty
    assert list(out[schema.MESSAGE_INDEX]) == [3]  # 0.75 < model_only_threshold
    assert out[schema.POINTS].iloc[0] == pytest.approx(2.5)


def test_strong_disagreement_goes_to_review(config: ModelsConfig) -> None:
    rules = schema.findings_frame([finding(1, "ATT-002"), finding(2, "ATT-002")])
    out, review = combine(rules, schema.empty_findings(),
                          acts_frame({1: {"negative_tone": 0.03}, 2: {"negative_tone": 0.3}}), config)
    assert list(out[schema.MESSAGE_INDEX]) == [2]  # in between: kept unchanged
    assert out[schema.CONFIDENCE].iloc[0] == 1.0
    assert tuple(review.columns) == REVIEW_COLUMNS
    assert review[[schema.MESSAGE_INDEX, schema.RULE_ID]].values.tolist() == [[1, "ATT-002"]]
    assert review["model_probability"].iloc[0] == pytest.approx(0.03)


def test_unlinked_and_conversation_findings_pass_through(config: ModelsConfig) -> None:
    rules = schema.findings_frame([
        finding(1, "KB-PRICE", source="knowledge", dim="product_knowledge", pol="-"),
        finding(-1, "ATT-009"),                       # conversation level
        finding(7, "ATT-003"),                        # no act row for seq 7 (e.g. a bot message)
    ])
    out, review = combine(rules, schema.empty_findings(), acts_frame({1: {"negative_tone": 0.0}}), config)
    assert review.empty and sorted(out[schema.RULE_ID]) == ["ATT-003", "ATT-009", "KB-PRICE"]


def test_rule_id_link_wins_over_dimension(config: ModelsConfig) -> None:
    rules = schema.findings_frame([finding(1, "SEL-001", dim="selling", pol="+")])
    out, review = combine(rules, schema.empty_findings(),
                          acts_frame({1: {"proactive_selling": 0.02, "negative_tone": 0.99}}), config)
    assert out.empty and list(review[schema.RULE_ID]) == ["SEL-001"]
