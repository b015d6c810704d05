"""Scorecard: turn findings into per-dimension scores, a weighted total and a grade.

Scores are derived from findings only (house rule 5). Every point is traceable: the trace has
one row per finding used, with the signed points it contributed after item, dimension and
0..100 range caps, so ``base + sum(trace.points) == score`` for every applicable dimension.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
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
    # Trace: per-contribution values here; finding columns are gathered by row at the end.
    t_row: list[int] = []
    t_cid: list[str] = []
    t_shop: list[str] = []
    t_dim: list[str] = []
    t_item: list[str] = []
    t_raw: list[float] = []
    t_pts: list[float] = []
    t_cap: list[str] = []
    t_veto: list[bool] = []
    # Distinct (rule, dimension, polarity, source, severity) keys are few: match items once each.
    item_of: dict[tuple[str, str, str, str, str], Item | None] = {}
    weights_of: dict[str, dict[str, float]] = {}
    flags = conversations[[S.CONVERSATION_ID, S.SHOP_ID, PRESALE_INTENT, TIMED, N_AGENT_MESSAGES]]

    for rec in flags.itertuples(index=False):
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
            mkey = (f_rule[i], dim, f_pol[i], f_src[i], f_sev[i])
            if mkey not in item_of:
                item_of[mkey] = _matching_item(items, *mkey)
            item = item_of[mkey]
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

        if shop_id not in weights_of:
            weights_of[shop_id] = scorecard.weights_for(shop_id, shops)
        weights = weights_of[shop_id]
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
                t_row.append(c.row)
                t_cid.append(cid)
                t_shop.append(shop_id)
                t_dim.append(dim)
                t_item.append(c.item.id)
                t_raw.append(c.sign * c.raw)
                t_pts.append(c.sign * c.value)
                t_cap.append(c.capped_by)
                t_veto.append(bool(f_rule[c.row] == veto_rule))
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
    rows_ = np.asarray(t_row, dtype=np.intp)

    def gather(values: list) -> list:
        return [values[i] for i in rows_.tolist()]

    trace = pd.DataFrame({
        S.CONVERSATION_ID: t_cid, S.SHOP_ID: t_shop, S.AGENT_ID: gather(f_agent), S.DIMENSION: t_dim,
        ITEM_ID: t_item, S.RULE_ID: gather(f_rule), S.MESSAGE_INDEX: gather(f_msg),
        S.POLARITY: gather(f_pol), S.SOURCE: gather(f_src), S.CONFIDENCE: gather(f_conf),
        RAW_POINTS: t_raw, S.POINTS: t_pts, CAPPED_BY: t_cap, TRACE_VETO: t_veto,
        S.EVIDENCE: gather(f_evid), S.EXPLANATION: gather(f_expl),
    }, columns=list(TRACE_COLUMNS))
    trace = trace.astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.AGENT_ID: "string",
                          S.DIMENSION: "string", ITEM_ID: "string", S.RULE_ID: "string",
                          S.MESSAGE_INDEX: "int64", S.POLARITY: "string", S.SOURCE: "string",
                          S.CONFIDENCE: "float64", RAW_POINTS: "float64", S.POINTS: "float64",
                          CAPPED_BY: "string", TRACE_VETO: "bool", S.EVIDENCE: "string",
                          S.EXPLANATION: "string"})
    return scores, trace


def _msg_key(v: object) -> int:
    try:
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1


def _na_reason(dim: str, rec: object) -> str | None:
    """Why a dimension without findings does not apply, or None when it applies (scored at base)."""
    if dim == "product_knowledge":
        return "nothing checkable said (no product-knowledge findings)"
    if dim == "selling":
        if not bool(getattr(rec, PRESALE_INTENT)):
            return "no pre-sale intent in customer messages and no selling findings"
        return None
    if dim == "responsiveness":
        if not bool(getattr(rec, TIMED)):
            return "no timestamps"
        return None
    if dim == "attitude":
        if int(getattr(rec, N_AGENT_MESSAGES) or 0) == 0:
            return "no human agent message"
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
