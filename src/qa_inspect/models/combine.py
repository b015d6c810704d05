"""Combine rule and model findings: agreement, model-only hits, and disagreements for review.

A keyword rule and a classifier fail differently (rules miss paraphrases, models misread
context), so neither overrules the other silently: agreement raises confidence, a model-only
hit counts with reduced points, and a rule hit the model strongly contradicts goes to a human
review queue instead of the score. Policy (thresholds, links) is in rules/models.yaml.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qa_inspect import schema
from qa_inspect.models.features import key_rows
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
    rf = rule_findings.reset_index(drop=True)
    mf = model_findings.reset_index(drop=True)
    cid = rf[schema.CONVERSATION_ID].astype(str).to_numpy(dtype=object)
    idx = rf[schema.MESSAGE_INDEX].astype("int64").to_numpy()
    n = len(rf)
    act_cols = [c for c in acts.columns if c.startswith("act_")] if not acts.empty else []
    act_names = [c[4:] for c in act_cols]
    pmat = acts[act_cols].to_numpy(dtype=float) if act_cols else np.zeros((0, 0))
    if acts.empty:
        arow = np.full(n, -1, dtype=np.intp)
    else:  # the act row of each finding's message; a repeated key: its last row
        arow = key_rows(acts[schema.CONVERSATION_ID].astype(str), acts[schema.SEQ].astype("int64").to_numpy(),
                        rf[schema.CONVERSATION_ID].astype(str), idx)
    # Linked acts per distinct (rule_id, dimension, polarity): a handful, not one per finding.
    lkeys = list(zip(rf[schema.RULE_ID].astype(str).tolist(), rf[schema.DIMENSION].astype(str).tolist(),
                     rf[schema.POLARITY].astype(str).tolist(), strict=True))
    link_sets: list[tuple[str, ...]] = []  # distinct linked-act tuples; link_code indexes them
    code_of_set: dict[tuple[str, ...], int] = {}
    code_of_key: dict[tuple[str, str, str], int] = {}
    for k in dict.fromkeys(lkeys):
        acts_k = tuple(linked_acts(pol, *k))
        code_of_key[k] = code_of_set.setdefault(acts_k, len(code_of_set))
        if code_of_key[k] == len(link_sets):
            link_sets.append(acts_k)
    link_code = np.fromiter((code_of_key[k] for k in lkeys), dtype=np.intp, count=n)
    links = [link_sets[c] for c in link_code.tolist()]
    has_link = np.fromiter((bool(x) for x in link_sets), dtype=bool, count=len(link_sets))[link_code]
    is_model = (rf[schema.SOURCE].astype(str) == "model").to_numpy(dtype=bool)
    compared = (idx >= 0) & has_link & (arow >= 0) & ~is_model

    p = np.zeros(n, dtype=float)
    best = np.empty(n, dtype=object)
    for code, acts_for in enumerate(link_sets):
        rows = np.flatnonzero(compared & (link_code == code))
        if not len(rows) or not acts_for:
            continue
        sub = np.column_stack([pmat[arow[rows], act_names.index(a)] if a in act_names
                               else np.zeros(len(rows)) for a in acts_for])
        j = np.argmax(sub, axis=1)  # first act with the highest probability, as max() picks
        p[rows] = sub[np.arange(len(rows)), j]
        best[rows] = np.asarray(acts_for, dtype=object)[j]
    agree = compared & (p >= pol.agree_above)
    review = compared & ~agree & (p <= pol.disagree_below)

    kept_r = rf.loc[~review].copy()
    ag = np.flatnonzero(agree)
    if len(ag):
        conf = rf[schema.CONFIDENCE].astype(float).to_numpy()[ag]
        c = np.where(np.isnan(conf), 1.0, conf)
        expl = rf[schema.EXPLANATION].tolist()
        kept_r.loc[ag, schema.CONFIDENCE] = 1.0 - (1.0 - c) * (1.0 - p[ag])
        kept_r.loc[ag, schema.EXPLANATION] = [f"{expl[i]} [model agrees: p({best[i]})={p[i]:.2f}]" for i in ag]
    absorbed = {(cid[i], int(idx[i]), a) for i in ag for a in links[i]}

    m_keys = zip(mf[schema.CONVERSATION_ID].astype(str).tolist(), mf[schema.MESSAGE_INDEX].astype("int64").tolist(),
                 (r.removeprefix("MODEL:") for r in mf[schema.RULE_ID].astype(str).tolist()), strict=True)
    not_absorbed = np.fromiter((k not in absorbed for k in m_keys), dtype=bool, count=len(mf))
    confident = ~(mf[schema.CONFIDENCE].astype(float).to_numpy() < pol.model_only_threshold)
    kept_m = mf.loc[not_absorbed & confident].copy()
    if len(kept_m):
        kept_m[schema.POINTS] = kept_m[schema.POINTS].astype(float) * pol.model_only_factor
        kept_m[schema.EXPLANATION] = [f"{e} [model only: points x {pol.model_only_factor:g}]"
                                      for e in kept_m[schema.EXPLANATION].tolist()]

    parts = [f[list(schema.FINDING_COLUMNS)] for f in (kept_r, kept_m) if len(f)]
    if parts:
        findings = pd.concat(parts, ignore_index=True).astype(schema.empty_findings().dtypes.to_dict())
    else:
        findings = schema.empty_findings()
    rv = np.flatnonzero(review)
    if len(rv):
        review_items = pd.DataFrame({
            schema.CONVERSATION_ID: cid[rv],
            schema.MESSAGE_INDEX: idx[rv],
            schema.RULE_ID: rf[schema.RULE_ID].to_numpy(dtype=object)[rv],
            REVIEW_REASON: [f"model disagrees: p({best[i]})={p[i]:.2f} <= {pol.disagree_below:.2f}" for i in rv],
            MODEL_PROBABILITY: p[rv],
        }).astype(empty_reviews().dtypes.to_dict())
    else:
        review_items = empty_reviews()
    return findings, review_items
