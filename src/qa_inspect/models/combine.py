"""Combine rule and model findings: agreement, model-only hits, and disagreements for review.

A keyword rule and a classifier fail differently (rules miss paraphrases, models misread
context), so neither overrules the other silently: agreement raises confidence, a model-only
hit counts with reduced points, and a rule hit the model strongly contradicts goes to a human
review queue instead of the score. Policy (thresholds, links) is in rules/models.yaml.
"""

from __future__ import annotations

import pandas as pd

from qa_inspect import schema
from qa_inspect.models.thresholds import CombinePolicy, ModelsConfig

REVIEW_REASON = "reason"
MODEL_PROBABILITY = "model_probability"
REVIEW_COLUMNS: tuple[str, ...] = (schema.CONVERSATION_ID, schema.MESSAGE_INDEX, schema.RULE_ID,
                                   REVIEW_REASON, MODEL_PROBABILITY)


def empty_reviews() -> pd.DataFrame:
    return pd.DataFrame({
        schema.CONVERSATION_ID: pd.Series(dtype="string"),
        schema.MESSAGE_INDEX: pd.Series(dtype="int64"),
        schema.RULE_ID: pd.Series(dtype="string"),
        REVIEW_REASON: pd.Series(dtype="string"),
        MODEL_PROBABILITY: pd.Series(dtype="float64"),
    })


def linked_acts(policy: CombinePolicy, rule_id: str, dimension: str, polarity: str) -> list[str]:
    """Acts that speak to a rule finding: a rule_ids link wins over dimension + polarity."""
    for link in policy.links:
        if rule_id in link.rule_ids:
            return list(link.acts)
    for link in policy.links:
        if not link.rule_ids and link.dimension == dimension and link.polarity == polarity:
            return list(link.acts)
    return []


def combine(rule_findings: pd.DataFrame, model_findings: pd.DataFrame, acts: pd.DataFrame,
            thresholds: ModelsConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge findings; return (findings, review_items).

    Inputs: rule/knowledge findings and model findings (schema.FINDING_COLUMNS), acts
    (conversation_id, seq, act_<label>). For each message-level, non-model finding with linked
    acts and an act row for its message, p = max linked act probability:
    - p >= agree_above: kept, confidence = 1-(1-c)(1-p), explanation notes the agreement, and the
      model findings for the same message and linked acts are absorbed (not counted twice);
    - p <= disagree_below: removed from findings, added to review_items;
    - otherwise kept unchanged.
    Model findings not absorbed count only with confidence >= model_only_threshold, with points
    x model_only_factor. Findings without linked acts (knowledge, conversation-level) pass
    through. Output review_items: conversation_id, message_index, rule_id, reason, model_probability.
    """
    pol = thresholds.combine
    probs: dict[tuple[str, int], dict[str, float]] = {}
    if not acts.empty:
        cols = [c for c in acts.columns if c.startswith("act_")]
        for rec in acts[[schema.CONVERSATION_ID, schema.SEQ, *cols]].itertuples(index=False):
            probs[(str(rec[0]), int(rec[1]))] = {c[4:]: float(v) for c, v in zip(cols, rec[2:], strict=True)}

    kept: list[dict] = []
    reviews: list[dict] = []
    absorbed: set[tuple[str, int, str]] = set()
    for rec in rule_findings.to_dict("records"):
        cid, idx = str(rec[schema.CONVERSATION_ID]), int(rec[schema.MESSAGE_INDEX])
        acts_for = linked_acts(pol, str(rec[schema.RULE_ID]), str(rec[schema.DIMENSION]),
                               str(rec[schema.POLARITY]))
        p_msg = probs.get((cid, idx))
        if idx < 0 or not acts_for or p_msg is None or str(rec[schema.SOURCE]) == "model":
            kept.append(rec)
            continue
        best_act = max(acts_for, key=lambda a: p_msg.get(a, 0.0))
        p = p_msg.get(best_act, 0.0)
        if p >= pol.agree_above:
            c = float(rec[schema.CONFIDENCE]) if pd.notna(rec[schema.CONFIDENCE]) else 1.0
            rec = dict(rec)
            rec[schema.CONFIDENCE] = 1.0 - (1.0 - c) * (1.0 - p)
            rec[schema.EXPLANATION] = f"{rec[schema.EXPLANATION]} [model agrees: p({best_act})={p:.2f}]"
            kept.append(rec)
            absorbed.update((cid, idx, a) for a in acts_for)
        elif p <= pol.disagree_below:
            reviews.append({
                schema.CONVERSATION_ID: cid, schema.MESSAGE_INDEX: idx, schema.RULE_ID: rec[schema.RULE_ID],
                REVIEW_REASON: f"model disagrees: p({best_act})={p:.2f} <= {pol.disagree_below:.2f}",
                MODEL_PROBABILITY: p,
            })
        else:
            kept.append(rec)

    for rec in model_findings.to_dict("records"):
        act = str(rec[schema.RULE_ID]).removeprefix("MODEL:")
        key = (str(rec[schema.CONVERSATION_ID]), int(rec[schema.MESSAGE_INDEX]), act)
        if key in absorbed or float(rec[schema.CONFIDENCE]) < pol.model_only_threshold:
            continue
        rec = dict(rec)
        rec[schema.POINTS] = float(rec[schema.POINTS]) * pol.model_only_factor
        rec[schema.EXPLANATION] = f"{rec[schema.EXPLANATION]} [model only: points x {pol.model_only_factor:g}]"
        kept.append(rec)

    findings = schema.findings_frame(kept)
    review = pd.DataFrame(reviews).astype(empty_reviews().dtypes.to_dict()) if reviews else empty_reviews()
    return findings, review
