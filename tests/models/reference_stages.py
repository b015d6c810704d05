"""Straightforward (slow) reference versions of the act, act-finding, combine and risk-feature stages.

Kept only for the equivalence tests: the production code predicts each distinct text once,
vectorises thresholds and combines with array operations; these per-row loops are the
definition it must match exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from qa_inspect import schema
from qa_inspect.models.acts import ActModel, _clean, _span, act_inputs, agent_rows
from qa_inspect.models.combine import MODEL_PROBABILITY, REVIEW_REASON, empty_reviews, linked_acts
from qa_inspect.models.features import (
    AGENT_ACTION_CUES,
    NEGATIVE_CUES,
    POSITIVE_CUES,
    STRUCT_FEATURES,
    _count,
    _max_repeat,
    ensure_text_columns,
    turn_runs,
)
from qa_inspect.models.thresholds import ModelsConfig


def ref_predict_act_frame(partition: pd.DataFrame, model: ActModel) -> pd.DataFrame:
    """conversation_id, seq, act_<label>... for every agent message of ``partition``."""
    cols = [schema.act_column(a) for a in model.labels]
    agents = agent_rows(partition)
    if agents.empty:
        out = pd.DataFrame({schema.CONVERSATION_ID: pd.Series(dtype="string"),
                            schema.SEQ: pd.Series(dtype="int64")})
        for c in cols:
            out[c] = pd.Series(dtype="float64")
        return out
    agents = ensure_text_columns(agents)
    # sklearn's own transform (the model's proba counts n-grams in bulk: it must match this)
    p = np.asarray(model.classifier.predict_proba(model.vectorizer.transform(act_inputs(agents))), dtype=float)
    out = pd.DataFrame(p, columns=cols)
    out.insert(0, schema.SEQ, agents[schema.SEQ].astype("int64").to_numpy())
    out.insert(0, schema.CONVERSATION_ID, agents[schema.CONVERSATION_ID].astype("string").to_numpy())
    return out


def ref_top_features(model: ActModel, row: sparse.csr_matrix, label: str, k: int = 3) -> list[str]:
    """The n-grams contributing most (coefficient x tf-idf value) to ``label`` for one message."""
    coef = model.coefs[model.labels.index(label)]
    idx, vals = row.indices, row.data * coef[row.indices]
    order = np.argsort(-vals, kind="stable")
    out: list[str] = []
    for j in order:
        if vals[j] <= 0 or len(out) >= k:
            break
        s = _clean(str(model.feature_names[idx[j]])).strip()
        if s and not any(s in o for o in out):
            out = [o for o in out if o not in s] + [s]
    return out


def ref_act_findings_frame(partition: pd.DataFrame, acts: pd.DataFrame, model: ActModel,
                       config: ModelsConfig) -> pd.DataFrame:
    """Model findings for acts above their configured threshold (source=model, rule MODEL:<act>)."""
    if acts.empty or not config.acts:
        return schema.empty_findings()
    agents = ensure_text_columns(agent_rows(partition))
    key = agents.set_index([schema.CONVERSATION_ID, schema.SEQ])
    lengths = {k: len(str(t).strip()) for k, t in key[schema.NORM_TEXT].items()}
    hits: list[tuple[int, str, float]] = []
    for i, rec in enumerate(acts.itertuples(index=False)):
        n_chars = lengths.get((rec[0], rec[1]), 0)
        for label, pol in config.acts.items():
            p = float(getattr(rec, schema.act_column(label)))
            if p >= pol.threshold and n_chars >= pol.min_chars:
                hits.append((i, label, p))
    if not hits:
        return schema.empty_findings()
    rows_needed = sorted({i for i, _, _ in hits})
    sub = acts.iloc[rows_needed]
    msgs = key.loc[list(zip(sub[schema.CONVERSATION_ID], sub[schema.SEQ], strict=True))]
    x = sparse.csr_matrix(model.vectorizer.transform(act_inputs(msgs)))
    pos = {r: j for j, r in enumerate(rows_needed)}
    records = []
    for i, label, p in hits:
        j = pos[i]
        msg = msgs.iloc[j]
        pol = config.acts[label]
        words = ref_top_features(model, x[j], label)
        ev, s, e = _span(str(msg[schema.TEXT]), str(msg[schema.NORM_TEXT]), words)
        records.append({
            schema.CONVERSATION_ID: acts.iloc[i][schema.CONVERSATION_ID],
            schema.SHOP_ID: msg.get(schema.SHOP_ID, pd.NA),
            schema.AGENT_ID: msg.get(schema.AGENT_ID, pd.NA),
            schema.MESSAGE_INDEX: int(acts.iloc[i][schema.SEQ]),
            schema.RULE_ID: f"MODEL:{label}",
            schema.DIMENSION: pol.dimension,
            schema.POLARITY: pol.polarity,
            schema.SEVERITY: pol.severity,
            schema.POINTS: pol.points,
            schema.EVIDENCE: ev,
            schema.EVIDENCE_START: s,
            schema.EVIDENCE_END: e,
            schema.EXPLANATION: f"{pol.explanation or label}: p({label})={p:.2f}; top n-grams: "
                                + ", ".join(words),
            schema.SOURCE: "model",
            schema.CONFIDENCE: p,
        })
    return schema.findings_frame(records)


def ref_combine(rule_findings: pd.DataFrame, model_findings: pd.DataFrame, acts: pd.DataFrame,
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


def ref_conversation_structure(messages: pd.DataFrame) -> pd.DataFrame:
    """One row per conversation with turn-structure and cue counts (index: conversation_id)."""
    rows = []
    for cid, g in messages.groupby(schema.CONVERSATION_ID, sort=False):
        g = g.sort_values(schema.SEQ)
        roles = ["agent" if r in ("agent", "bot") else str(r) for r in g[schema.ROLE]]
        texts = [str(t) for t in g[schema.NORM_TEXT]]
        cust = [t for t, r in zip(texts, roles, strict=True) if r == "customer"]
        agent = [t for t, r in zip(texts, roles, strict=True) if r == "agent"]
        runs = turn_runs(roles)
        cruns = [" ".join(texts[s:e]) for r, s, e in runs if r == "customer"]
        last_c = cruns[-1] if cruns else ""
        first_c = cruns[0] if cruns else ""
        cjoin = " ".join(cust)
        ajoin = " ".join(agent)
        last_cust_pos = max((i for i, r in enumerate(roles) if r == "customer"), default=-1)
        first_agent = next((i for i, r in enumerate(roles) if r == "agent"), len(roles))
        rows.append({
            schema.CONVERSATION_ID: cid,
            "n_messages": len(texts),
            "n_turns": len(runs),
            "n_customer": len(cust),
            "n_agent": len(agent),
            "customer_ratio": len(cust) / max(len(texts), 1),
            "has_agent": float(bool(agent)),
            "last_is_agent": float(bool(roles) and roles[-1] == "agent"),
            "cust_len_mean": float(np.mean([len(t) for t in cust])) if cust else 0.0,
            "cust_len_max": max((len(t) for t in cust), default=0),
            "cust_len_first": len(first_c),
            "cust_len_last": len(last_c),
            "agent_len_mean": float(np.mean([len(t) for t in agent])) if agent else 0.0,
            "agent_len_last": len(agent[-1]) if agent else 0,
            "cust_q": cjoin.count("?") + cjoin.count("？") + cjoin.count("吗"),
            "cust_excl": cjoin.count("!") + cjoin.count("！"),
            "cust_neg": _count(cjoin, NEGATIVE_CUES),
            "cust_pos": _count(cjoin, POSITIVE_CUES),
            "last_cust_neg": _count(last_c, NEGATIVE_CUES),
            "last_cust_pos": _count(last_c, POSITIVE_CUES),
            "last_cust_q": last_c.count("?") + last_c.count("？"),
            "first_cust_neg": _count(first_c, NEGATIVE_CUES),
            "agent_action": _count(ajoin, AGENT_ACTION_CUES),
            "agent_q": ajoin.count("?") + ajoin.count("？"),
            "cust_repeat": _max_repeat(cust),
            "agent_after_last_cust": float(any(r == "agent" for r in roles[last_cust_pos + 1:])),
            "n_cust_turns_after_agent": sum(1 for r, s, _ in runs if r == "customer" and s > first_agent),
        })
    if not rows:
        return pd.DataFrame(columns=[schema.CONVERSATION_ID, *STRUCT_FEATURES]).set_index(
            schema.CONVERSATION_ID)
    return pd.DataFrame(rows).set_index(schema.CONVERSATION_ID)


def ref_conversation_texts(messages: pd.DataFrame) -> pd.DataFrame:
    """Per conversation: all text, customer text, agent text, last customer turn (for ridge stage)."""
    rows = []
    for cid, g in messages.groupby(schema.CONVERSATION_ID, sort=False):
        g = g.sort_values(schema.SEQ)
        roles = ["agent" if r in ("agent", "bot") else str(r) for r in g[schema.ROLE]]
        texts = [str(t) for t in g[schema.NORM_TEXT]]
        runs = turn_runs(roles)
        cruns = [" ".join(texts[s:e]) for r, s, e in runs if r == "customer"]
        rows.append({
            schema.CONVERSATION_ID: cid,
            "all": " | ".join(f"{'C' if r == 'customer' else 'A'}:{t}" for r, t in zip(roles, texts,
                                                                                       strict=True)),
            "customer": " ".join(t for t, r in zip(texts, roles, strict=True) if r == "customer"),
            "agent": " ".join(t for t, r in zip(texts, roles, strict=True) if r == "agent"),
            "last_customer": cruns[-1] if cruns else "",
        })
    return pd.DataFrame(rows, columns=[schema.CONVERSATION_ID, "all", "customer", "agent",
                                       "last_customer"]).set_index(schema.CONVERSATION_ID)
