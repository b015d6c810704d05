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
from qa_inspect.models.acts import _FINDING_DTYPES, as_findings_dtypes
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
    link_code, link_sets = _link_codes(rf, pol)
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

    # Kept rule findings: agreement raises confidence and notes it in the explanation. Built as
    # whole columns (one assignment each) rather than label-based .loc writes.
    ag = np.flatnonzero(agree)
    p_ag = p[ag].tolist()  # Python values, not numpy scalars, per finding
    kept_r = rf.loc[~review]
    if len(ag):
        conf = rf[schema.CONFIDENCE].astype(float).to_numpy(copy=True)
        c = np.where(np.isnan(conf[ag]), 1.0, conf[ag])
        conf[ag] = 1.0 - (1.0 - c) * (1.0 - p[ag])
        kept_r = kept_r.assign(**{schema.CONFIDENCE: conf[~review],
                                  schema.EXPLANATION: _agreed_explanations(rf[schema.EXPLANATION], ag, best[ag],
                                                                           p_ag, ~review)})
    absorbed = {(c_, i_, a) for c_, i_, code in zip(cid[ag].tolist(), idx[ag].tolist(), link_code[ag].tolist(),
                                                     strict=True)
                for a in link_sets[code]}

    m_keys = zip(mf[schema.CONVERSATION_ID].astype(str).tolist(), mf[schema.MESSAGE_INDEX].astype("int64").tolist(),
                 (r.removeprefix("MODEL:") for r in mf[schema.RULE_ID].astype(str).tolist()), strict=True)
    not_absorbed = np.fromiter((k not in absorbed for k in m_keys), dtype=bool, count=len(mf))
    confident = ~(mf[schema.CONFIDENCE].astype(float).to_numpy() < pol.model_only_threshold)
    kept_m = mf.loc[not_absorbed & confident]
    if len(kept_m):
        kept_m = kept_m.assign(**{
            schema.POINTS: kept_m[schema.POINTS].astype(float) * pol.model_only_factor,
            schema.EXPLANATION: pd.array([f"{e} [model only: points x {pol.model_only_factor:g}]"
                                          for e in kept_m[schema.EXPLANATION].tolist()],
                                         dtype=_FINDING_DTYPES[schema.EXPLANATION]),
        })

    parts = [f[list(schema.FINDING_COLUMNS)] for f in (kept_r, kept_m) if len(f)]
    findings = as_findings_dtypes(pd.concat(parts, ignore_index=True)) if parts else schema.empty_findings()
    rv = np.flatnonzero(review)
    if len(rv):
        review_items = pd.DataFrame({
            schema.CONVERSATION_ID: pd.array(cid[rv], dtype="string"),
            schema.MESSAGE_INDEX: idx[rv].astype("int64"),
            schema.RULE_ID: pd.array(rf[schema.RULE_ID].to_numpy(dtype=object)[rv], dtype="string"),
            REVIEW_REASON: pd.array([f"model disagrees: p({b})={q:.2f} <= {pol.disagree_below:.2f}"
                                     for b, q in zip(best[rv].tolist(), p[rv].tolist(), strict=True)],
                                    dtype="string"),
            MODEL_PROBABILITY: p[rv].astype("float64"),
        })
    else:
        review_items = empty_reviews()
    return findings, review_items


def _agreed_explanations(expl: pd.Series, ag: np.ndarray, best: np.ndarray, p_ag: list[float],
                         keep: np.ndarray) -> object:
    """The explanation column of the kept rule findings, the agreed ones (rows ``ag``) with the
    model's note appended. A column already in the findings' string dtype gets the new texts
    written into (a copy of) its array at those rows; only those rows become Python strings,
    not the whole column there and back."""
    dtype = _FINDING_DTYPES[schema.EXPLANATION]
    old = expl.iloc[ag].to_numpy(dtype=object).tolist()
    new = [f"{e} [model agrees: p({b})={q:.2f}]" for e, b, q in zip(old, best.tolist(), p_ag, strict=True)]
    if expl.dtype == dtype:
        arr = expl.array.copy()
        arr[ag] = pd.array(new, dtype=dtype)
        return arr[keep]
    objs = expl.to_numpy(dtype=object, copy=True)
    objs[ag] = new
    return pd.array(objs[keep], dtype=dtype)


def _link_codes(rf: pd.DataFrame, pol: CombinePolicy) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Per finding, the index of its linked-act tuple in the returned list of distinct tuples.

    ``linked_acts`` runs once per distinct (rule_id, dimension, polarity), found by factorizing
    the three columns (as strings, as before) instead of one Python tuple per finding.
    """
    n = len(rf)
    if not n:
        return np.zeros(0, dtype=np.intp), []
    columns = [rf[c].astype(str) for c in (schema.RULE_ID, schema.DIMENSION, schema.POLARITY)]
    key = np.zeros(n, dtype=np.int64)
    for col in columns:  # key stays < n: re-factorized after each column
        codes, uniq = pd.factorize(col, use_na_sentinel=False)
        key = pd.factorize(key * len(uniq) + codes)[0].astype(np.int64)
    _, first = np.unique(key, return_index=True)  # first row of each key (codes in order of appearance)
    rule_ids, dimensions, polarities = (col.to_numpy(dtype=object)[first].tolist() for col in columns)
    link_sets: list[tuple[str, ...]] = []
    code_of_set: dict[tuple[str, ...], int] = {}
    set_of_key = np.zeros(len(first), dtype=np.intp)
    for j, k in enumerate(zip(rule_ids, dimensions, polarities, strict=True)):
        acts_k = tuple(linked_acts(pol, *k))
        if acts_k not in code_of_set:
            code_of_set[acts_k] = len(link_sets)
            link_sets.append(acts_k)
        set_of_key[j] = code_of_set[acts_k]
    return set_of_key[key], link_sets
