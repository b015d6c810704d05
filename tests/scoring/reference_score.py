"""Straightforward (slow) reference of ``score_conversations`` for the equivalence test.

The production version caches item matching per distinct finding key and gathers the trace
by row; this per-finding, per-dict-row version is the definition it must match exactly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection

import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.scoring.scorecard import (
    CAPPED_BY,
    ITEM_ID,
    N_AGENT_MESSAGES,
    PRESALE_INTENT,
    RAW_POINTS,
    TIMED,
    TRACE_COLUMNS,
    TRACE_VETO,
    Scorecard,
    _clamp_to_range,
    _Contribution,
    _matching_item,
    _msg_key,
    _na_reason,
)


def ref_score_conversations(conversations: pd.DataFrame, findings: pd.DataFrame, scorecard: Scorecard,
                        shops: dict[str, Shop], *,
                        veto_rules: Collection[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score each conversation from its findings.

    Input ``conversations``: one row per conversation with CONVERSATION_ID, SHOP_ID,
    PRESALE_INTENT, TIMED, N_AGENT_MESSAGES (see ``scoring.conversations``); ``findings``:
    schema.FINDING_COLUMNS. Returns ``(scores, trace)``: ``conversations`` plus SCORE_COLUMNS,
    TOTAL, GRADE, VETO, VETO_RULE, N_FINDINGS, NA_REASONS (no rows dropped), and the trace
    (TRACE_COLUMNS). ``veto_rules``: rule ids the rule set flags ``veto: true``; they veto like
    scorecard veto items (confidence >= veto_min_confidence). A dimension is N/A (NaN, excluded from the total) when it has no findings
    and the conversation gives no reason to expect it (see docs/scoring.md).
    """
    S.require_columns(conversations, (S.CONVERSATION_ID, S.SHOP_ID, PRESALE_INTENT, TIMED, N_AGENT_MESSAGES),
                      "score")
    S.require_columns(findings, S.FINDING_COLUMNS, "score")
    items = scorecard.items
    veto_set = frozenset(veto_rules)
    by_conv: dict[str, list[int]] = defaultdict(list)
    f_conv = findings[S.CONVERSATION_ID].astype(str).tolist()
    for i, cid in enumerate(f_conv):
        by_conv[cid].append(i)
    f_rule = findings[S.RULE_ID].astype(str).tolist()
    f_dim = findings[S.DIMENSION].astype(str).tolist()
    f_pol = findings[S.POLARITY].astype(str).tolist()
    f_src = findings[S.SOURCE].astype(str).tolist()
    f_sev = findings[S.SEVERITY].astype(str).tolist()
    f_pts = findings[S.POINTS].astype(float).fillna(0.0).tolist()
    f_conf = findings[S.CONFIDENCE].astype(float).fillna(1.0).clip(0, 1).tolist()
    f_msg = findings[S.MESSAGE_INDEX].tolist()
    f_agent = findings[S.AGENT_ID].tolist()
    f_evid = findings[S.EVIDENCE].tolist()
    f_expl = findings[S.EXPLANATION].tolist()

    out_scores: dict[str, list[float]] = {d: [] for d in S.DIMENSIONS}
    totals: list[float] = []
    grades: list[str] = []
    vetoes: list[bool] = []
    veto_rules: list[str | None] = []
    n_findings: list[int] = []
    na_reasons: list[str] = []
    trace_rows: list[dict] = []

    for rec in conversations.itertuples(index=False):
        cid = str(getattr(rec, S.CONVERSATION_ID))
        shop_id = str(getattr(rec, S.SHOP_ID))
        rows = sorted(by_conv.get(cid, []), key=lambda i: (_msg_key(f_msg[i]), f_rule[i], i))
        n_findings.append(len(rows))
        contribs: dict[str, list[_Contribution]] = defaultdict(list)
        item_used: dict[tuple[str, str], float] = defaultdict(float)
        dim_used: dict[tuple[str, float], float] = defaultdict(float)
        veto_rule: str | None = None
        dims_with_findings: set[str] = set()
        for i in rows:
            dim = f_dim[i]
            if dim not in scorecard.dimensions:
                continue
            dims_with_findings.add(dim)
            item = _matching_item(items, f_rule[i], dim, f_pol[i], f_src[i], f_sev[i])
            if item is None:
                if f_rule[i] in veto_set and f_conf[i] >= scorecard.veto_min_confidence and veto_rule is None:
                    veto_rule = f_rule[i]
                continue
            vetoing = (item.veto or f_rule[i] in veto_set) and f_conf[i] >= scorecard.veto_min_confidence
            if vetoing and veto_rule is None:
                veto_rule = f_rule[i]
            sign = 1.0 if f_pol[i] == "+" else -1.0
            base_pts = item.points if item.points is not None else f_pts[i]
            raw = max(base_pts, 0.0) * item.multiplier * f_conf[i]
            c = _Contribution(row=i, dimension=dim, item=item, sign=sign, raw=raw, value=raw)
            if item.max_points is not None:
                left = max(item.max_points - item_used[(item.id, dim)], 0.0)
                if c.value > left:
                    c.value, c.capped_by = left, "item"
            item_used[(item.id, dim)] += c.value
            dcfg = scorecard.dimensions[dim]
            dim_cap = dcfg.max_bonus if sign > 0 else dcfg.max_deduction
            left = max(dim_cap - dim_used[(dim, sign)], 0.0)
            if c.value > left:
                c.value, c.capped_by = left, "dimension"
            dim_used[(dim, sign)] += c.value
            contribs[dim].append(c)

        reasons: list[str] = []
        applicable: dict[str, bool] = {}
        for dim in S.DIMENSIONS:
            if dim in dims_with_findings:
                applicable[dim] = True
                continue
            why = _na_reason(dim, rec)
            applicable[dim] = why is None
            if why is not None:
                reasons.append(f"{dim}: {why}")

        weights = scorecard.weights_for(shop_id, shops)
        num = den = 0.0
        for dim in S.DIMENSIONS:
            if not applicable[dim]:
                out_scores[dim].append(math.nan)
                continue
            base = scorecard.dimensions[dim].base
            cs = contribs.get(dim, [])
            _clamp_to_range(base, cs)
            score = base + sum(c.sign * c.value for c in cs)
            out_scores[dim].append(score)
            num += weights[dim] * score
            den += weights[dim]
            for c in cs:
                trace_rows.append({
                    S.CONVERSATION_ID: cid, S.SHOP_ID: shop_id, S.AGENT_ID: f_agent[c.row],
                    S.DIMENSION: dim, ITEM_ID: c.item.id, S.RULE_ID: f_rule[c.row],
                    S.MESSAGE_INDEX: f_msg[c.row], S.POLARITY: f_pol[c.row], S.SOURCE: f_src[c.row],
                    S.CONFIDENCE: f_conf[c.row], RAW_POINTS: c.sign * c.raw, S.POINTS: c.sign * c.value,
                    CAPPED_BY: c.capped_by, TRACE_VETO: bool(f_rule[c.row] == veto_rule),
                    S.EVIDENCE: f_evid[c.row], S.EXPLANATION: f_expl[c.row],
                })
        total = num / den if den > 0 else math.nan
        if veto_rule is not None:
            total = 0.0
            reasons.append(f"veto: {veto_rule}")
        totals.append(total)
        grades.append(scorecard.grade(total))
        vetoes.append(veto_rule is not None)
        veto_rules.append(veto_rule)
        na_reasons.append("; ".join(reasons))

    scores = conversations.copy()
    for dim in S.DIMENSIONS:
        scores[S.score_column(dim)] = pd.Series(out_scores[dim], index=scores.index, dtype="float64")
    scores[S.TOTAL] = pd.Series(totals, index=scores.index, dtype="float64")
    scores[S.GRADE] = pd.Series(grades, index=scores.index, dtype="string")
    scores[S.VETO] = pd.Series(vetoes, index=scores.index, dtype="bool")
    scores[S.VETO_RULE] = pd.Series(veto_rules, index=scores.index, dtype="string")
    scores[S.N_FINDINGS] = pd.Series(n_findings, index=scores.index, dtype="int64")
    scores[S.NA_REASONS] = pd.Series(na_reasons, index=scores.index, dtype="string")
    trace = pd.DataFrame(trace_rows, columns=list(TRACE_COLUMNS))
    trace = trace.astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.AGENT_ID: "string",
                          S.DIMENSION: "string", ITEM_ID: "string", S.RULE_ID: "string",
                          S.MESSAGE_INDEX: "int64", S.POLARITY: "string", S.SOURCE: "string",
                          S.CONFIDENCE: "float64", RAW_POINTS: "float64", S.POINTS: "float64",
                          CAPPED_BY: "string", TRACE_VETO: "bool", S.EVIDENCE: "string",
                          S.EXPLANATION: "string"})
    return scores, trace


