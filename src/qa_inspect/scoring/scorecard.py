"""Scorecard: turn findings into per-dimension scores, a weighted total and a grade.

Scores are derived from findings only (house rule 5). Every point is traceable: the trace has
one row per finding used, with the signed points it contributed after item, dimension and
0..100 range caps, so ``base + sum(trace.points) == score`` for every applicable dimension.
"""

from __future__ import annotations

import fnmatch
import math
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qa_inspect import schema as S
from qa_inspect.config import Shop, config_error_from_validation, load_yaml
from qa_inspect.errors import ConfigError

SCORECARD_FILE = "scorecard.yaml"

# Conversation flags the scorecard needs to decide N/A (built by scoring.conversations).
PRESALE_INTENT = "presale_intent"  # bool: a customer message shows pre-sale intent, or an order/payment event
TIMED = "timed"  # bool: the conversation has usable timestamps
N_AGENT_MESSAGES = "n_agent_messages"  # human (non-auto-reply) agent messages

# Trace columns (one row per finding used by the scorecard).
ITEM_ID = "item_id"
RAW_POINTS = "raw_points"  # signed points x multiplier x confidence, before caps
CAPPED_BY = "capped_by"  # "" | "item" | "dimension" | "range"
TRACE_VETO = "veto"
TRACE_COLUMNS: tuple[str, ...] = (
    S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.DIMENSION, ITEM_ID, S.RULE_ID, S.MESSAGE_INDEX,
    S.POLARITY, S.SOURCE, S.CONFIDENCE, RAW_POINTS, S.POINTS, CAPPED_BY, TRACE_VETO,
    S.EVIDENCE, S.EXPLANATION,
)

DEFAULT_PRESALE_WORDS = (
    "多少钱", "价格", "价钱", "优惠", "便宜", "活动", "有货", "有没有货", "库存", "推荐", "哪款", "哪个好",
    "区别", "尺码", "尺寸", "码数", "颜色", "材质", "适合", "想买", "能买", "包邮", "赠品", "送什么",
    "保修", "功能", "续航", "参数", "型号", "规格", "怎么样", "好用吗", "优惠券", "满减", "下单", "拍下",
)


class Dimension(BaseModel):
    """One scored dimension: start at ``base``, subtract deductions, add bonuses, clamp 0..100."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    label: str = ""
    weight: float = Field(ge=0)
    base: float = Field(default=100.0, ge=0, le=100)
    max_deduction: float = Field(default=100.0, ge=0)
    max_bonus: float = Field(default=0.0, ge=0)


class Select(BaseModel):
    """Which findings an item takes: every given criterion must match (globs for rule ids)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    rules: list[str] = Field(default_factory=list)
    dimensions: list[Literal["product_knowledge", "selling", "attitude", "responsiveness"]] = Field(
        default_factory=list)
    polarity: Literal["+", "-"] | None = None
    sources: list[Literal["rule", "model", "knowledge"]] = Field(default_factory=list)
    severities: list[Literal["info", "minor", "major", "critical"]] = Field(default_factory=list)

    def matches(self, rule_id: str, dimension: str, polarity: str, source: str, severity: str) -> bool:
        if self.rules and not any(fnmatch.fnmatchcase(rule_id, g) for g in self.rules):
            return False
        if self.dimensions and dimension not in self.dimensions:
            return False
        if self.polarity is not None and polarity != self.polarity:
            return False
        if self.sources and source not in self.sources:
            return False
        return not (self.severities and severity not in self.severities)


class Item(BaseModel):
    """A scorecard line. The first item (in file order) that selects a finding takes it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    id: str = Field(min_length=1)
    description: str = ""
    select: Select
    points: float | None = Field(default=None, ge=0)  # fixed points per finding; None: the finding's
    multiplier: float = Field(default=1.0, ge=0)
    max_points: float | None = Field(default=None, ge=0)  # per conversation and dimension
    veto: bool = False  # 一票否决: total becomes 0 when a selected finding is confident enough


class Band(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    label: str = Field(min_length=1)
    min: float = Field(ge=0, le=100)


class Scorecard(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    version: int = 1
    dimensions: dict[Literal["product_knowledge", "selling", "attitude", "responsiveness"], Dimension]
    items: list[Item]
    grades: list[Band]
    na_grade: str = "无法评分"
    veto_min_confidence: float = Field(default=0.8, ge=0, le=1)
    presale_intent_words: list[str] = Field(default_factory=lambda: list(DEFAULT_PRESALE_WORDS))
    shop_weights: dict[str, dict[str, float]] = Field(default_factory=dict)
    slow_reply_seconds: float = Field(default=60.0, gt=0)
    pass_min: float = Field(default=75.0, ge=0, le=100)  # calibration: a human total >= this "passed"

    @field_validator("dimensions")
    @classmethod
    def _all_dims(cls, v: dict[str, Dimension]) -> dict[str, Dimension]:
        missing = [d for d in S.DIMENSIONS if d not in v]
        if missing:
            raise ValueError(f"missing dimensions {missing}")
        if sum(d.weight for d in v.values()) <= 0:
            raise ValueError("weights must not all be 0")
        return v

    @field_validator("grades")
    @classmethod
    def _bands(cls, v: list[Band]) -> list[Band]:
        if not v:
            raise ValueError("at least one grade band")
        mins = [b.min for b in v]
        if mins != sorted(mins, reverse=True) or len(set(mins)) != len(mins):
            raise ValueError("grade bands must be listed from the highest min down, each min distinct")
        if mins[-1] != 0:
            raise ValueError("the last grade band must have min: 0")
        return v

    @model_validator(mode="after")
    def _unique_items(self) -> Scorecard:
        seen: set[str] = set()
        for it in self.items:
            if it.id in seen:
                raise ValueError(f"duplicate item id '{it.id}'")
            seen.add(it.id)
        for shop, weights in self.shop_weights.items():
            bad = [k for k in weights if k not in S.DIMENSIONS]
            if bad:
                raise ValueError(f"shop_weights.{shop}: unknown dimensions {bad}")
            negative = [k for k, w in weights.items() if w < 0]
            if negative:
                raise ValueError(f"shop_weights.{shop}: weights must be >= 0 ({', '.join(negative)})")
        return self

    def grade(self, total: float) -> str:
        if total is None or (isinstance(total, float) and math.isnan(total)):
            return self.na_grade
        for band in self.grades:
            if total >= band.min - 1e-9:
                return band.label
        return self.grades[-1].label

    def weights_for(self, shop_id: str, shops: dict[str, Shop]) -> dict[str, float]:
        """Default weights, overridden by scorecard.yaml shop_weights, then by shops.yaml."""
        w = {d: self.dimensions[d].weight for d in S.DIMENSIONS}
        w.update(self.shop_weights.get(shop_id, {}))
        shop = shops.get(shop_id)
        if shop is not None and shop.scorecard_weights:
            bad = [k for k in shop.scorecard_weights if k not in S.DIMENSIONS]
            if bad:
                raise ConfigError(f"unknown dimensions {bad}; known: {list(S.DIMENSIONS)}",
                                  file="shops.yaml", key_path=f"shops[{shop_id}].scorecard_weights")
            w.update(shop.scorecard_weights)
        return w


def load_scorecard(rules_dir: Path | str) -> Scorecard:
    """Load and validate ``<rules>/scorecard.yaml``; errors name the file and key path."""
    path = Path(rules_dir) / SCORECARD_FILE
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", file=str(path))
    try:
        return Scorecard.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        rule_id = None
        if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
            items = data.get("items") or []
            if loc[1] < len(items) and isinstance(items[loc[1]], dict):
                rule_id = items[loc[1]].get("id")
        raise config_error_from_validation(exc, file=str(path), rule_id=rule_id) from None


@dataclass
class _Contribution:
    row: int  # position in the findings frame
    dimension: str
    item: Item
    sign: float
    raw: float  # magnitude before caps
    value: float  # magnitude after caps
    capped_by: str = ""


def _matching_item(items: list[Item], rule_id: str, dimension: str, polarity: str, source: str,
                   severity: str) -> Item | None:
    for it in items:
        if it.select.matches(rule_id, dimension, polarity, source, severity):
            return it
    return None


def score_conversations(conversations: pd.DataFrame, findings: pd.DataFrame, scorecard: Scorecard,
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

    Array form of the per-finding definition (tests/scoring/reference_score.py): findings are
    ordered per conversation by (message, rule id, row); the caps, which depend on what came
    before, run rank by rank within their groups with the same float operations, and each
    dimension's points are added in the same order as Python's ``sum`` adds them (rank by rank
    too), so every number is bit-identical to the per-finding loop.
    """
    S.require_columns(conversations, (S.CONVERSATION_ID, S.SHOP_ID, PRESALE_INTENT, TIMED, N_AGENT_MESSAGES),
                      "score")
    S.require_columns(findings, S.FINDING_COLUMNS, "score")
    items = scorecard.items
    dims = S.DIMENSIONS  # a Scorecard has exactly these (validated)
    n_dims = len(dims)
    veto_set = frozenset(veto_rules)
    vmin = scorecard.veto_min_confidence

    # --- conversations
    conv_keys = [str(x) for x in conversations[S.CONVERSATION_ID].tolist()]
    shop_keys = [str(x) for x in conversations[S.SHOP_ID].tolist()]
    n_conv = len(conv_keys)
    key_index = pd.Index(conv_keys, dtype=object)
    uniq = key_index.unique()
    conv_code = uniq.get_indexer(key_index)

    # --- findings: string columns as codes of their distinct values (as ``astype(str)`` gives them)
    n_f = len(findings)
    r_codes, r_vals = _str_codes(findings[S.RULE_ID])
    d_codes, d_vals = _str_codes(findings[S.DIMENSION])
    p_codes, p_vals = _str_codes(findings[S.POLARITY])
    s_codes, s_vals = _str_codes(findings[S.SOURCE])
    v_codes, v_vals = _str_codes(findings[S.SEVERITY])
    f_pts = findings[S.POINTS].astype(float).fillna(0.0).to_numpy(dtype=float)
    f_conf = findings[S.CONFIDENCE].astype(float).fillna(1.0).clip(0, 1).to_numpy(dtype=float)
    msg_col = findings[S.MESSAGE_INDEX]
    if pd.api.types.is_integer_dtype(msg_col.dtype) and not msg_col.hasnans:
        msg_key = msg_col.to_numpy(dtype=np.int64)
    else:
        msg_key = np.asarray([_msg_key(v) for v in msg_col.tolist()], dtype=np.int64)
    f_key = (uniq.get_indexer(pd.Index(findings[S.CONVERSATION_ID].astype(str))) if n_f
             else np.zeros(0, dtype=np.intp))
    rank_of_code = np.empty(len(r_vals), dtype=np.int64)
    rank_of_code[sorted(range(len(r_vals)), key=lambda k: (not isinstance(r_vals[k], str), str(r_vals[k])))] = \
        np.arange(len(r_vals))
    rule_rank = rank_of_code[r_codes]
    dim_of = {d: k for k, d in enumerate(dims)}
    f_dimc = np.array([dim_of.get(d, -1) for d in d_vals], dtype=np.int64)[d_codes] if n_f \
        else np.zeros(0, dtype=np.int64)
    # Item per distinct (rule, dimension, polarity, source, severity): few keys, matched once each.
    f_item = np.full(n_f, -1, dtype=np.int64)
    ok = np.flatnonzero(f_dimc >= 0)
    if len(ok):
        mkey = r_codes[ok].astype(np.int64)
        for c, nv in ((d_codes, len(d_vals)), (p_codes, len(p_vals)), (s_codes, len(s_vals)),
                      (v_codes, len(v_vals))):
            mkey = mkey * nv + c[ok]
        _, first, inv = np.unique(mkey, return_index=True, return_inverse=True)
        found = []
        for i in ok[first].tolist():
            it = _matching_item(items, r_vals[r_codes[i]], d_vals[d_codes[i]], p_vals[p_codes[i]],
                                s_vals[s_codes[i]], v_vals[v_codes[i]])
            found.append(-1 if it is None else items.index(it))
        f_item[ok] = np.asarray(found, dtype=np.int64)[inv.reshape(-1)]
    f_sign = np.array([1.0 if p == "+" else -1.0 for p in p_vals])[p_codes] if n_f else np.zeros(0)
    f_vetorule = np.array([r in veto_set for r in r_vals], dtype=bool)[r_codes] if n_f else np.zeros(0, bool)

    # --- instances: (conversation, finding row) pairs, in scoring order
    cnt = np.bincount(f_key[f_key >= 0], minlength=len(uniq))
    n_findings = cnt[conv_code] if n_conv else np.zeros(0, dtype=np.int64)
    by_key = np.argsort(np.where(f_key >= 0, f_key, len(uniq)), kind="stable")
    key_start = np.concatenate([[0], np.cumsum(cnt)])
    if key_index.is_unique:
        inst_conv = f_key[by_key[:key_start[-1]]]
        inst_row = by_key[:key_start[-1]]
    else:  # a repeated conversation id gets every finding of that id, once per row
        inst_row = np.concatenate([by_key[key_start[k]:key_start[k + 1]] for k in conv_code.tolist()] or
                                  [np.zeros(0, dtype=np.intp)])
        inst_conv = np.repeat(np.arange(n_conv), n_findings)
    order = np.lexsort((inst_row, rule_rank[inst_row], msg_key[inst_row], inst_conv))
    inst_conv, inst_row = inst_conv[order], inst_row[order]
    i_dim = f_dimc[inst_row]
    valid = i_dim >= 0
    i_item = f_item[inst_row]
    has_dim = np.zeros((n_conv, n_dims), dtype=bool)
    has_dim[inst_conv[valid], i_dim[valid]] = True

    # --- veto: the first confident veto finding of the conversation, in scoring order
    item_veto = np.array([it.veto for it in items] + [False], dtype=bool)
    vflag = valid & (f_conf[inst_row] >= vmin) & (f_vetorule[inst_row] | item_veto[i_item])
    veto_conv, veto_first = np.unique(inst_conv[vflag], return_index=True)
    veto_rule_of: list[str | None] = [None] * n_conv
    for c, r in zip(veto_conv.tolist(), inst_row[vflag][veto_first].tolist(), strict=True):
        veto_rule_of[c] = r_vals[r_codes[r]]

    # --- contributions (valid dimension and a matching item), in scoring order
    cm = valid & (i_item >= 0)
    c_conv, c_row, c_dim, c_item = inst_conv[cm], inst_row[cm], i_dim[cm], i_item[cm]
    n_c = len(c_row)
    it_points = np.array([np.nan if it.points is None else it.points for it in items] + [np.nan])
    it_has_points = np.array([it.points is not None for it in items] + [False], dtype=bool)
    it_mult = np.array([it.multiplier for it in items] + [1.0])
    it_max = np.array([np.nan if it.max_points is None else it.max_points for it in items] + [np.nan])
    base_pts = np.where(it_has_points[c_item], it_points[c_item], f_pts[c_row])
    c_sign = f_sign[c_row]
    raw = np.where(0.0 > base_pts, 0.0, base_pts) * it_mult[c_item] * f_conf[c_row]  # max(pts, 0.0)
    value = raw.copy()
    capped = np.zeros(n_c, dtype=np.int8)  # 0 "", 1 item, 2 dimension, 3 range
    ic = np.flatnonzero(~np.isnan(it_max[c_item]))
    if len(ic):
        grp = (c_conv[ic] * (len(items) + 1) + c_item[ic]) * n_dims + c_dim[ic]
        v, hit = _cap_in_order(value[ic], grp, it_max[c_item[ic]])
        value[ic] = v
        capped[ic[hit]] = 1
    dcfg = [scorecard.dimensions[d] for d in dims]
    cap_plus = np.array([d.max_bonus for d in dcfg], dtype=float)
    cap_minus = np.array([d.max_deduction for d in dcfg], dtype=float)
    if n_c:
        grp = (c_conv * n_dims + c_dim) * 2 + (c_sign > 0)
        v, hit = _cap_in_order(value, grp, np.where(c_sign > 0, cap_plus[c_dim], cap_minus[c_dim]))
        value = v
        capped[hit] = 2

    # --- per (conversation, dimension): trace order, Python sums, range clamp where needed
    bases = [d.base for d in dcfg]
    t_order = np.lexsort((np.arange(n_c), c_dim, c_conv))
    c_conv, c_row, c_dim, c_item = c_conv[t_order], c_row[t_order], c_dim[t_order], c_item[t_order]
    c_sign, raw, value, capped = c_sign[t_order], raw[t_order], value[t_order], capped[t_order]
    gkey = c_conv * n_dims + c_dim
    g_start = np.flatnonzero(np.concatenate([[True], gkey[1:] != gkey[:-1]])) if n_c else np.zeros(0, np.intp)
    g_end = np.append(g_start[1:], n_c) if n_c else np.zeros(0, np.intp)
    score_mat = np.full((n_conv, n_dims), np.nan)
    has_contrib = np.zeros((n_conv, n_dims), dtype=bool)
    has_contrib[c_conv, c_dim] = True
    g_dim = c_dim[g_start]
    g_score = np.asarray(bases, dtype=float)[g_dim] + _sequential_sums(c_sign * value, g_start, g_end)
    score_mat[c_conv[g_start], g_dim] = g_score
    # a dimension out of 0..100: trim its latest contributions (per finding, as before)
    for a, b in zip(g_start[(g_score > 100.0) | (g_score < 0.0)].tolist(),
                    g_end[(g_score > 100.0) | (g_score < 0.0)].tolist(), strict=True):
        d = int(c_dim[a])
        base = bases[d]
        cs = [_Contribution(row=int(c_row[j]), dimension=dims[d], item=items[int(c_item[j])],
                            sign=float(c_sign[j]), raw=float(raw[j]), value=float(value[j]))
              for j in range(a, b)]
        _clamp_to_range(base, cs)
        for j, c in zip(range(a, b), cs, strict=True):
            if c.capped_by == "range":
                value[j], capped[j] = c.value, 3
        score_mat[int(c_conv[a]), d] = base + sum(c.sign * c.value for c in cs)

    # --- applicability, weighted total, grade, N/A reasons
    presale = [bool(x) for x in conversations[PRESALE_INTENT].tolist()]
    timed = [bool(x) for x in conversations[TIMED].tolist()]
    no_agent = [int(x or 0) == 0 for x in conversations[N_AGENT_MESSAGES].tolist()]
    why_na = {"product_knowledge": [_NA_PK] * n_conv,
              "selling": [None if p else _NA_SELLING for p in presale],
              "responsiveness": [None if t else _NA_TIMED for t in timed],
              "attitude": [_NA_AGENT if z else None for z in no_agent]}
    applicable = has_dim.copy()
    for k, d in enumerate(dims):
        applicable[:, k] |= np.fromiter((w is None for w in why_na[d]), dtype=bool, count=n_conv)
        fill = applicable[:, k] & ~has_contrib[:, k]
        score_mat[fill, k] = bases[k] + 0  # no findings: the base (as base + sum([]))
    shop_code, shop_uniq = pd.factorize(np.asarray(shop_keys, dtype=object)) if n_conv else (np.zeros(0, np.intp), [])
    w_shop = np.array([[scorecard.weights_for(sid, shops)[d] for d in dims] for sid in list(shop_uniq)],
                      dtype=float).reshape(len(shop_uniq), n_dims)
    w_mat = w_shop[shop_code]  # one weights row per distinct shop, not per conversation
    num = np.zeros(n_conv)
    den = np.zeros(n_conv)
    for k in range(n_dims):
        ap = applicable[:, k]
        num = np.where(ap, num + w_mat[:, k] * np.where(ap, score_mat[:, k], 0.0), num)
        den = np.where(ap, den + w_mat[:, k], den)
    with np.errstate(invalid="ignore", divide="ignore"):
        totals = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    vetoed = np.array([r is not None for r in veto_rule_of], dtype=bool)
    totals[vetoed] = 0.0
    # N/A reasons: each dimension's reason is one fixed text, so the joined text depends only on
    # which dimensions are N/A (a bitmask: one join per distinct mask), plus the veto rule.
    na_bits = np.zeros(n_conv, dtype=np.int64)
    for k, d in enumerate(dims):
        na_k = ~has_dim[:, k] & np.fromiter((w is not None for w in why_na[d]), dtype=bool, count=n_conv)
        na_bits |= na_k.astype(np.int64) << k
    reason_text = {int(b): "; ".join(f"{d}: {_NA_TEXT[d]}" for k, d in enumerate(dims) if b >> k & 1)
                   for b in np.unique(na_bits).tolist()}
    na_reasons = [reason_text[b] if r is None else "; ".join(x for x in (reason_text[b], f"veto: {r}") if x)
                  for b, r in zip(na_bits.tolist(), veto_rule_of, strict=True)]

    scores = conversations.copy()
    for k, dim in enumerate(dims):
        scores[S.score_column(dim)] = pd.Series(score_mat[:, k], index=scores.index, dtype="float64")
    scores[S.TOTAL] = pd.Series(totals, index=scores.index, dtype="float64")
    scores[S.GRADE] = pd.Series(_grades(scorecard, totals), index=scores.index, dtype="string")
    scores[S.VETO] = pd.Series(vetoed, index=scores.index, dtype="bool")
    scores[S.VETO_RULE] = pd.Series(veto_rule_of, index=scores.index, dtype="string")
    scores[S.N_FINDINGS] = pd.Series(n_findings, index=scores.index, dtype="int64")
    scores[S.NA_REASONS] = pd.Series(na_reasons, index=scores.index, dtype="string")

    cap_names = pd.array(["", "item", "dimension", "range"], dtype="string")
    conv_ids = conversations[S.CONVERSATION_ID]
    shop_ids = conversations[S.SHOP_ID]
    veto_code = np.array([-1 if r is None else r_vals.index(r) for r in veto_rule_of], dtype=np.int64)
    trace = pd.DataFrame({
        S.CONVERSATION_ID: _take_str(conv_ids, c_conv, conv_keys), S.SHOP_ID: _take_str(shop_ids, c_conv, shop_keys),
        S.AGENT_ID: _take_str(findings[S.AGENT_ID], c_row),
        S.DIMENSION: pd.array(list(dims), dtype="string").take(c_dim),
        ITEM_ID: pd.array([it.id for it in items] + [""], dtype="string").take(c_item),
        S.RULE_ID: _take_str(findings[S.RULE_ID], c_row, r_vals, r_codes),
        S.MESSAGE_INDEX: findings[S.MESSAGE_INDEX].to_numpy()[c_row],
        S.POLARITY: _take_str(findings[S.POLARITY], c_row, p_vals, p_codes),
        S.SOURCE: _take_str(findings[S.SOURCE], c_row, s_vals, s_codes),
        S.CONFIDENCE: f_conf[c_row], RAW_POINTS: c_sign * raw, S.POINTS: c_sign * value,
        CAPPED_BY: cap_names.take(capped.astype(np.intp)), TRACE_VETO: r_codes[c_row] == veto_code[c_conv],
        S.EVIDENCE: _take_str(findings[S.EVIDENCE], c_row), S.EXPLANATION: _take_str(findings[S.EXPLANATION], c_row),
    }, columns=list(TRACE_COLUMNS))
    trace = _as_dtypes(trace, {S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.AGENT_ID: "string",
                          S.DIMENSION: "string", ITEM_ID: "string", S.RULE_ID: "string",
                          S.MESSAGE_INDEX: "int64", S.POLARITY: "string", S.SOURCE: "string",
                          S.CONFIDENCE: "float64", RAW_POINTS: "float64", S.POINTS: "float64",
                          CAPPED_BY: "string", TRACE_VETO: "bool", S.EVIDENCE: "string",
                          S.EXPLANATION: "string"})
    return scores, trace


def _grades(scorecard: Scorecard, totals: np.ndarray) -> np.ndarray:
    """``scorecard.grade`` of every total, band by band over the array: the first band (highest
    min first) with total >= min - 1e-9, the last band below them all, na_grade for NaN."""
    out = np.full(len(totals), scorecard.grades[-1].label, dtype=object)
    done = np.isnan(totals)
    out[done] = scorecard.na_grade
    for band in scorecard.grades:
        hit = ~done & (totals >= band.min - 1e-9)
        out[hit] = band.label
        done |= hit
    return out


def _as_dtypes(df: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """``df.astype(dtypes)``; a frame whose columns have those dtypes already is returned as it
    is (the trace's columns are built in them; converting them anyway copies every column)."""
    if all(df[c].dtype == pd.api.types.pandas_dtype(t) for c, t in dtypes.items()):
        return df
    return df.astype(dtypes)


def _str_codes(s: pd.Series) -> tuple[np.ndarray, list]:
    """Codes of a column's values and the distinct values as ``astype(str)`` gives them (a
    missing value stays a float nan, as there)."""
    codes, uniques = pd.factorize(s.astype(str), use_na_sentinel=False)
    return codes.astype(np.intp), list(uniques)


def _take_str(s: pd.Series, rows: np.ndarray, values: list | None = None,
              codes: np.ndarray | None = None) -> object:
    """``s`` at ``rows`` for a string trace column, without a Python object per value when the
    column already has the output dtype; otherwise the given per-row values (``values[codes]``,
    or ``values`` itself as one value per row) or the column's own objects."""
    if s.dtype == pd.StringDtype() and (values is None or codes is not None or not s.hasnans):
        return s.array.take(rows)
    if values is None:
        return s.to_numpy(dtype=object)[rows]
    arr = np.asarray(values, dtype=object)
    return arr[codes][rows] if codes is not None else arr[rows]


def _sequential_sums(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per segment [start, end) of ``values``, Python's ``sum(values[start:end])``: 0 plus each
    value in order, run rank by rank (every segment's k-th value at once), so each total sees
    the same float additions. Python 3.12+ sums floats with compensation: the loop there."""
    out = np.zeros(len(starts))
    if not len(starts):
        return out
    if sys.version_info >= (3, 12):  # pragma: no cover - this project's venv is 3.11
        vals = values.tolist()
        return np.asarray([sum(vals[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)], dtype=float)
    sizes = ends - starts
    for r in range(int(sizes.max())):
        g = np.flatnonzero(sizes > r)
        out[g] = out[g] + values[starts[g] + r]
    return out


def _cap_in_order(values: np.ndarray, groups: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group, in array order: value = left if value > left, left = max(cap - used, 0.0);
    used += value. Returns (values, capped). Runs rank by rank (all groups' k-th element at
    once), so each group's running total sees exactly the per-element float operations."""
    out = values.astype(float, copy=True)
    hit = np.zeros(len(out), dtype=bool)
    if not len(out):
        return out, hit
    codes, uniq_groups = pd.factorize(groups)
    by_group = np.argsort(codes, kind="stable")
    sorted_codes = codes[by_group]
    first = np.flatnonzero(np.concatenate([[True], sorted_codes[1:] != sorted_codes[:-1]]))
    rank = np.empty(len(out), dtype=np.int64)
    rank[by_group] = np.arange(len(out)) - np.repeat(first, np.diff(np.append(first, len(out))))
    used = np.zeros(len(uniq_groups))
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
    for r in range(len(bounds) - 1):
        ix = by_rank[bounds[r]:bounds[r + 1]]  # at most one element per group
        g = codes[ix]
        left = caps[ix] - used[g]
        left = np.where(0.0 > left, 0.0, left)  # max(left, 0.0)
        v = out[ix]
        cut = v > left
        v = np.where(cut, left, v)
        out[ix] = v
        hit[ix] = cut
        used[g] = used[g] + v
    return out, hit


_NA_PK = "nothing checkable said (no product-knowledge findings)"
_NA_SELLING = "no pre-sale intent in customer messages and no selling findings"
_NA_TIMED = "no timestamps"
_NA_AGENT = "no human agent message"
_NA_TEXT = {"product_knowledge": _NA_PK, "selling": _NA_SELLING, "responsiveness": _NA_TIMED,
            "attitude": _NA_AGENT}  # the one reason text each dimension can have


def _msg_key(v: object) -> int:
    try:
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1


def _na_reason(dim: str, rec: object) -> str | None:
    """Why a dimension without findings does not apply, or None when it applies (scored at base)."""
    if dim == "product_knowledge":
        return _NA_PK
    if dim == "selling":
        if not bool(getattr(rec, PRESALE_INTENT)):
            return _NA_SELLING
        return None
    if dim == "responsiveness":
        if not bool(getattr(rec, TIMED)):
            return _NA_TIMED
        return None
    if dim == "attitude":
        if int(getattr(rec, N_AGENT_MESSAGES) or 0) == 0:
            return _NA_AGENT
        return None
    return None


def _clamp_to_range(base: float, cs: list[_Contribution]) -> None:
    """Trim the latest contributions so base + sum stays in 0..100 (the trace stays exact)."""
    score = base + sum(c.sign * c.value for c in cs)
    if score > 100.0:
        excess, sign = score - 100.0, 1.0
    elif score < 0.0:
        excess, sign = -score, -1.0
    else:
        return
    for c in reversed(cs):
        if excess <= 1e-12:
            break
        if c.sign != sign or c.value <= 0:
            continue
        cut = min(c.value, excess)
        c.value -= cut
        excess -= cut
        c.capped_by = "range"
