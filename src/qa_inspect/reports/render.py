"""Render the HTML reports of one run: agents, merchants, supervisor overview, coaching pack.

Chat text is hostile input: every value reaches the page through Jinja autoescaping (no
``|safe`` on data), evidence spans are cut from the ORIGINAL text with the finding's offsets and
emitted as separate escaped segments, and each page carries a Content-Security-Policy that only
allows its own inline style/script by hash. Merchant pages are rendered from
:func:`data.for_shop` output, so another shop's rows never reach their template.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from qa_inspect import schema as S
from qa_inspect.reports import charts
from qa_inspect.reports.data import ReportData, for_shop, with_buyer_aliases
from qa_inspect.reports.labels import labels_for
from qa_inspect.safe_io import safe_path

log = logging.getLogger(__name__)

Mask = Callable[[str], str]
WORST_N = 3
BEST_N = 2
COACHING_MAX = 20


@dataclass
class ReportIndex:
    """Where the reports of a run were written (paths are absolute)."""

    out_dir: Path
    index: Path
    coaching: Path
    agents: dict[str, Path] = field(default_factory=dict)
    merchants: dict[str, Path] = field(default_factory=dict)

    def all_files(self) -> list[Path]:
        return [self.index, self.coaching, *self.agents.values(), *self.merchants.values()]


# --- PII -----------------------------------------------------------------------------------

_FALLBACK_PATTERNS = [
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "[邮箱]"),
    (re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"), "[证件号]"),
    (re.compile(r"(?<!\d)\d{16,19}(?!\d)"), "[卡号]"),
    (re.compile(r"(?<!\d)(\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)"), "[手机号]"),
    (re.compile(r"(?<!\d)(\+?886[- ]?|0)9\d{2}[- ]?\d{3}[- ]?\d{3}(?!\d)"), "[手机号]"),
    (re.compile(r"(?<!\d)0\d{2,3}[- ]\d{7,8}(?!\d)"), "[电话]"),
    (re.compile(r"\d+(号|號|室|弄|樓|楼)"), "*\\1"),
]


def basic_mask_pii(text: str) -> str:
    """Conservative stand-in used only while qa_inspect.text.pii is not installed."""
    for pat, rep in _FALLBACK_PATTERNS:
        text = pat.sub(rep, text)
    return text


def resolve_mask(mask: Mask | None) -> Mask:
    """The PII masker: the one passed in, else text.pii.mask_pii, else the basic fallback."""
    if mask is not None:
        return mask
    try:
        from qa_inspect.text.pii import mask_pii  # type: ignore[import-not-found]
    except ImportError:
        log.warning("qa_inspect.text.pii not available; using the reports' basic PII masker")
        return basic_mask_pii
    return mask_pii


def buyer_masker(aliases: dict[str, str], mask: Mask) -> Mask:
    """Replace buyer nicknames (longest first) with aliases, then mask PII."""
    names = sorted((n for n in aliases if len(n) >= 2), key=len, reverse=True)

    def run(text: str) -> str:
        for n in names:
            if n in text:
                text = text.replace(n, aliases[n])
        return mask(text)

    return run


# --- small value helpers ------------------------------------------------------------------

def _f(v: Any) -> float | None:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _s(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _bucket(pct: float) -> int:
    """Bar width class ``w0``..``w100`` in steps of 5 (CSS classes, so the page CSP needs no
    inline styles and premailer can inline them for mail clients)."""
    return int(5 * round(max(0.0, min(100.0, pct)) / 5))


def fmt_num(v: Any, digits: int = 1) -> str:
    x = _f(v)
    return "–" if x is None else f"{x:,.{digits}f}"


def fmt_pct(v: Any) -> str:
    x = _f(v)
    return "–" if x is None else f"{x * 100:.1f}%"


def fmt_int(v: Any) -> str:
    x = _f(v)
    return "–" if x is None else f"{int(round(x)):,}"


def fmt_ts(v: Any) -> str:
    if v is None or v is pd.NaT or v is pd.NA:
        return ""
    try:
        ts = pd.Timestamp(v)
    except (TypeError, ValueError):
        return _s(v)
    return "" if pd.isna(ts) else ts.strftime("%m-%d %H:%M:%S")


# --- page plumbing --------------------------------------------------------------------------

def make_env() -> Environment:
    env = Environment(loader=PackageLoader("qa_inspect", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=fmt_num, pct=fmt_pct, int=fmt_int, ts=fmt_ts)
    return env


def _asset(name: str) -> str:
    return resources.files("qa_inspect").joinpath("templates", name).read_text(encoding="utf-8")


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def page_assets(*, script: bool) -> dict[str, str]:
    """Inline CSS/JS and a CSP that allows exactly them (by hash) and data: images, nothing else."""
    css = _asset("report.css")
    js = _asset("table.js") if script else ""
    csp = ("default-src 'none'; img-src data:; style-src " + _sha(css) + "; script-src "
           + (_sha(js) if script else "'none'") + "; base-uri 'none'; form-action 'none'")
    # Markup: these are our own package files, and escaping would corrupt CSS/JS and its hash.
    return {"css": Markup(css), "js": Markup(js), "csp": csp}


def _locale_for(shop_ids: Iterable[str], data: ReportData) -> str:
    locs = {data.shops[s].locale for s in shop_ids if s in data.shops}
    return "zh-TW" if locs == {"zh-TW"} else "zh-CN"


def _shop_name(data: ReportData, shop_id: str) -> str:
    shop = data.shops.get(shop_id)
    return shop.name if shop else shop_id


# --- transcripts with evidence highlighting ------------------------------------------------

def segments(text: str, spans: list[tuple[int, int, str, int]], mask: Mask | None = None) -> list[dict[str, Any]]:
    """Cut ``text`` at span borders into ``{text, cls, refs}`` pieces (cls '' / 'neg' / 'pos').

    Spans are (start, end, polarity, ref number) into the original text; invalid ones are
    ignored. With ``mask``, each piece is masked on its own; if that differs from masking the
    whole text (a phone number across a border), the highlight is dropped rather than leak.
    """
    n = len(text)
    good = [(a, b, p, r) for a, b, p, r in spans if 0 <= a < b <= n]
    cuts = sorted({0, n, *(a for a, *_ in good), *(b for _, b, *_ in good)})
    out: list[dict[str, Any]] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        cover = [(p, r) for s, e, p, r in good if s <= a and b <= e]
        cls = "" if not cover else ("neg" if any(p == "-" for p, _ in cover) else "pos")
        out.append({"text": text[a:b], "cls": cls, "refs": sorted({r for _, r in cover})})
    if not out:
        out = [{"text": text, "cls": "", "refs": []}]
    if mask is not None:
        whole = mask(text)
        pieces = [dict(seg, text=mask(seg["text"])) for seg in out]
        if "".join(p["text"] for p in pieces) != whole:
            return [{"text": whole, "cls": "", "refs": []}]
        out = pieces
    return out


def _findings_by_conv(findings: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {str(k): g for k, g in findings.groupby(S.CONVERSATION_ID, sort=False)}


def conversation_view(conv: pd.Series, msgs: pd.DataFrame, fnd: pd.DataFrame, *,
                      kb_answers: dict[str, str], mask: Mask | None) -> dict[str, Any]:
    """A conversation as the templates need it: messages with highlighted spans, numbered findings."""
    fnd = fnd.sort_values([S.MESSAGE_INDEX, S.EVIDENCE_START, S.RULE_ID], kind="stable")
    findings: list[dict[str, Any]] = []
    spans: dict[int, list[tuple[int, int, str, int]]] = {}
    for no, (_, f) in enumerate(fnd.iterrows(), start=1):
        seq = int(f[S.MESSAGE_INDEX]) if _f(f[S.MESSAGE_INDEX]) is not None else -1
        start, end = _f(f[S.EVIDENCE_START]), _f(f[S.EVIDENCE_END])
        if seq >= 0 and start is not None and end is not None and start >= 0:
            spans.setdefault(seq, []).append((int(start), int(end), _s(f[S.POLARITY]), no))
        evidence = _s(f[S.EVIDENCE])
        kb = kb_answers.get(evidence) or kb_answers.get(_s(f[S.RULE_ID])) if _s(f[S.POLARITY]) == "-" else None
        findings.append({
            "no": no, "seq": seq, "rule_id": _s(f[S.RULE_ID]), "source": _s(f[S.SOURCE]),
            "dimension": _s(f[S.DIMENSION]), "polarity": _s(f[S.POLARITY]),
            "severity": _s(f[S.SEVERITY]), "points": _f(f[S.POINTS]) or 0.0,
            "confidence": _f(f[S.CONFIDENCE]),
            "evidence": mask(evidence) if mask else evidence,
            "explanation": mask(_s(f[S.EXPLANATION])) if mask else _s(f[S.EXPLANATION]),
            "kb_answer": kb,
        })
    messages = []
    for _, m in msgs.sort_values(S.SEQ, kind="stable").iterrows():
        seq = int(m[S.SEQ])
        text = _s(m[S.TEXT])
        segs = segments(text, spans.get(seq, []), mask)
        messages.append({
            "seq": seq, "role": _s(m[S.ROLE]) or "system", "ts": fmt_ts(m[S.TS]),
            "who": _s(m[S.AGENT_ID]) if _s(m[S.ROLE]) == "agent" else _s(m[S.CUSTOMER_ID]),
            "segments": segs, "auto": bool(m[S.IS_AUTO_REPLY]) if _f(m[S.IS_AUTO_REPLY]) is not None else False,
            "refs": [f["no"] for f in findings if f["seq"] == seq],
        })
    cid = _s(conv[S.CONVERSATION_ID])
    return {
        # ingest's session ids embed the buyer nickname (``shop:<buyer>:<start>``): mask like text
        "id": mask(cid) if mask else cid, "shop_id": _s(conv[S.SHOP_ID]),
        "agent_id": _s(conv[S.AGENT_ID]), "customer_id": _s(conv[S.CUSTOMER_ID]),
        "night": _s(conv[S.NIGHT]), "total": _f(conv[S.TOTAL]), "grade": _s(conv[S.GRADE]),
        "veto": bool(conv[S.VETO]) if _f(conv[S.VETO]) is not None else False,
        "veto_rule": _s(conv[S.VETO_RULE]),
        "scores": {d: _f(conv[S.score_column(d)]) for d in S.DIMENSIONS},
        "messages": messages, "findings": findings,
        "conv_findings": [f for f in findings if f["seq"] < 0],
    }


def _views(data: ReportData, conv_ids: list[str], mask: Mask | None,
           kb_answers: dict[str, str]) -> list[dict[str, Any]]:
    convs = data.conversations.set_index(S.CONVERSATION_ID, drop=False)
    msgs = data.messages[data.messages[S.CONVERSATION_ID].isin(conv_ids)]
    fnd = data.findings[data.findings[S.CONVERSATION_ID].isin(conv_ids)]
    m_by = {str(k): g for k, g in msgs.groupby(S.CONVERSATION_ID, sort=False)}
    f_by = _findings_by_conv(fnd)
    out = []
    for cid in conv_ids:
        if cid not in convs.index:
            continue
        out.append(conversation_view(convs.loc[cid], m_by.get(cid, data.messages.iloc[0:0]),
                                     f_by.get(cid, data.findings.iloc[0:0]),
                                     kb_answers=kb_answers, mask=mask))
    return out


# --- aggregates -------------------------------------------------------------------------------

def _dim_means(conv: pd.DataFrame) -> dict[str, float | None]:
    return {d: _f(pd.to_numeric(conv[S.score_column(d)], errors="coerce").mean()) for d in S.DIMENSIONS}


def _totals(conv: pd.DataFrame) -> list[float]:
    return [float(x) for x in pd.to_numeric(conv[S.TOTAL], errors="coerce").dropna()]


def _kpi_rows(kpis: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: r[k] for k in kpis.columns} for _, r in kpis.iterrows()]


def _team_kpis(agent_kpis: pd.DataFrame) -> dict[str, Any]:
    """Team reference: mean over agents of each KPI (each agent counts once)."""
    out: dict[str, Any] = {}
    for col in agent_kpis.columns:
        if col in (S.AGENT_ID, S.SHOP_ID):
            continue
        out[col] = _f(pd.to_numeric(agent_kpis[col], errors="coerce").mean())
    return out


def _rule_table(findings: pd.DataFrame, polarity: str | None = "-", limit: int | None = None) -> list[dict[str, Any]]:
    f = findings if polarity is None else findings[findings[S.POLARITY] == polarity]
    if f.empty:
        return []
    pts = pd.to_numeric(f[S.POINTS], errors="coerce").fillna(0.0)
    g = (f.assign(_pts=pts).groupby([S.RULE_ID, S.SOURCE, S.DIMENSION, S.POLARITY], dropna=False)
         .agg(count=(S.RULE_ID, "size"), points=("_pts", "sum"), example=(S.EXPLANATION, "first"))
         .reset_index().sort_values(["points", "count", S.RULE_ID], ascending=[False, False, True]))
    rows = [{"rule_id": _s(r[S.RULE_ID]), "source": _s(r[S.SOURCE]), "dimension": _s(r[S.DIMENSION]),
             "polarity": _s(r[S.POLARITY]), "count": int(r["count"]), "points": float(r["points"]),
             "example": _s(r["example"])} for _, r in g.iterrows()]
    return rows[:limit] if limit else rows


def _worst_best(conv: pd.DataFrame) -> tuple[list[str], list[str]]:
    c = conv.assign(_t=pd.to_numeric(conv[S.TOTAL], errors="coerce")).dropna(subset=["_t"])
    c = c.sort_values(["_t", S.CONVERSATION_ID])
    # With few conversations keep some for the "best" list: at most half are shown as worst.
    worst = [str(x) for x in c[S.CONVERSATION_ID].head(min(WORST_N, math.ceil(len(c) / 2)))]
    best = [str(x) for x in c[S.CONVERSATION_ID].iloc[::-1] if str(x) not in worst][:BEST_N]
    return worst, best


def _good_selling(data: ReportData, agent_id: str, mask: Mask) -> list[dict[str, Any]]:
    """Positive selling findings of OTHER agents with the message they praise (PII masked)."""
    f = data.findings[(data.findings[S.AGENT_ID] != agent_id) & (data.findings[S.POLARITY] == "+")
                      & (data.findings[S.DIMENSION] == "selling") & (data.findings[S.MESSAGE_INDEX] >= 0)]
    if f.empty:
        return []
    f = f.assign(_p=pd.to_numeric(f[S.POINTS], errors="coerce").fillna(0)).sort_values(
        ["_p", S.CONVERSATION_ID], ascending=[False, True]).head(3)
    out = []
    for _, r in f.iterrows():
        m = data.messages[(data.messages[S.CONVERSATION_ID] == r[S.CONVERSATION_ID])
                          & (data.messages[S.SEQ] == r[S.MESSAGE_INDEX])]
        if m.empty:
            continue
        span = [(int(r[S.EVIDENCE_START]), int(r[S.EVIDENCE_END]), "+", 1)]
        out.append({"agent_id": _s(r[S.AGENT_ID]), "rule_id": _s(r[S.RULE_ID]),
                    "explanation": _s(r[S.EXPLANATION]), "segments": segments(_s(m.iloc[0][S.TEXT]), span, mask)})
    return out


def _coaching_suggestions(data: ReportData, agent_f: pd.DataFrame) -> list[dict[str, str]]:
    """One suggestion per wrong-knowledge claim (with the KB answer) or frequent deduction."""
    out: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    neg = agent_f[agent_f[S.POLARITY] == "-"]
    for _, r in neg.iterrows():
        ev, rid = _s(r[S.EVIDENCE]), _s(r[S.RULE_ID])
        ans = data.kb_answers.get(ev) or data.kb_answers.get(rid)
        if ans and (ev, rid) not in seen:
            seen.add((ev, rid))
            out.append({"rule_id": rid, "said": ev, "explanation": _s(r[S.EXPLANATION]), "answer": ans})
    return out[:10]


# --- pages -------------------------------------------------------------------------------------

def _base_ctx(data: ReportData, locale: str, title: str, *, script: bool, root: str) -> dict[str, Any]:
    return {"L": labels_for(locale), "lang": locale, "title": title, "run_id": data.run_id,
            "generated_at": data.generated_at.strftime("%Y-%m-%d %H:%M"), "root": root,
            "dims": list(S.DIMENSIONS), **page_assets(script=script)}


def agent_context(data: ReportData, agent_id: str, *, mask: Mask) -> dict[str, Any]:
    conv = data.conversations[data.conversations[S.AGENT_ID] == agent_id]
    shop_ids = sorted(set(conv[S.SHOP_ID].astype(str)))
    locale = _locale_for(shop_ids, data)
    L = labels_for(locale)
    agent_f = data.findings[data.findings[S.AGENT_ID] == agent_id]
    me_dims, team_dims = _dim_means(conv), _dim_means(data.conversations)
    tr = data.trend
    nights = sorted(set(tr[S.NIGHT].astype(str)))
    n_tr = pd.to_numeric(tr["n"], errors="coerce").fillna(0)
    mt = pd.to_numeric(tr["mean_total"], errors="coerce")
    team_by_night = {}
    for night in nights:
        sel = tr[S.NIGHT].astype(str) == night
        w = n_tr[sel]
        team_by_night[night] = _f((mt[sel] * w).sum() / w.sum()) if w.sum() else _f(mt[sel].mean())
    mine = {str(r[S.NIGHT]): _f(r["mean_total"]) for _, r in tr[tr[S.AGENT_ID] == agent_id].iterrows()}
    charts_ = {
        "dims": charts.data_uri(charts.dimension_chart(me_dims, team_dims)),
        "dist": charts.data_uri(charts.distribution_chart(_totals(conv), _totals(data.conversations))),
        "trend": charts.data_uri(charts.trend_chart(nights, [mine.get(n) for n in nights],
                                                    [team_by_night[n] for n in nights])) if nights else None,
    }
    worst, best = _worst_best(conv)
    ctx = _base_ctx(data, locale, f"{L['agent_report']} · {agent_id}", script=False, root="../")
    ak = data.agent_kpis
    ctx.update({
        "agent_id": agent_id,
        "shops": [{"id": s, "name": _shop_name(data, s)} for s in shop_ids],
        "kpis": _kpi_rows(ak[ak[S.AGENT_ID] == agent_id]),
        "team_kpis": _team_kpis(ak),
        "n_conv": len(conv), "mean_total": _f(pd.to_numeric(conv[S.TOTAL], errors="coerce").mean()),
        "team_total": _f(pd.to_numeric(data.conversations[S.TOTAL], errors="coerce").mean()),
        "me_dims": me_dims, "team_dims": team_dims, "charts": charts_,
        "trend_rows": [{"night": n, "me": mine.get(n), "team": team_by_night[n]} for n in nights],
        "deductions": _rule_table(agent_f, "-", 10),
        "worst": _views(data, worst, None, data.kb_answers),
        "best": _views(data, best, None, data.kb_answers),
        "suggestions": _coaching_suggestions(data, agent_f),
        "good_selling": _good_selling(data, agent_id, mask),
        "veto_count": int(conv[S.VETO].fillna(False).astype(bool).sum()),
    })
    return ctx


_ISSUES = {
    "issue_knowledge": lambda f: (f[S.SOURCE] == "knowledge") | (f[S.DIMENSION] == "product_knowledge"),
    "issue_attitude": lambda f: f[S.DIMENSION] == "attitude",
    "issue_responsiveness": lambda f: f[S.DIMENSION] == "responsiveness",
}


def merchant_context(shop_data: ReportData, shop_id: str, *, mask: Mask | None, email: bool = False) -> dict[str, Any]:
    """Context for one shop's report or email. ``shop_data`` must come from :func:`for_shop`."""
    shop = shop_data.shops.get(shop_id)
    locale = shop.locale if shop else "zh-CN"
    L = labels_for(locale)
    conv, f = shop_data.conversations, shop_data.findings
    neg = f[f[S.POLARITY] == "-"]
    issues = []
    for key, pick in _ISSUES.items():
        sel = neg[pick(neg)] if not neg.empty else neg
        # Examples: the conversations with the most points lost on this issue, one message each.
        ex_rows = sel.assign(_p=pd.to_numeric(sel[S.POINTS], errors="coerce").fillna(0)).sort_values(
            ["_p", S.CONVERSATION_ID], ascending=[False, True]).drop_duplicates(S.CONVERSATION_ID).head(3)
        examples = []
        msgs = shop_data.messages
        for _, r in ex_rows.iterrows():
            m = msgs[(msgs[S.CONVERSATION_ID] == r[S.CONVERSATION_ID]) & (msgs[S.SEQ] == r[S.MESSAGE_INDEX])]
            text = _s(m.iloc[0][S.TEXT]) if len(m) else ""
            span = [(int(r[S.EVIDENCE_START]), int(r[S.EVIDENCE_END]), "-", 1)]
            examples.append({"agent_id": _s(r[S.AGENT_ID]), "rule_id": _s(r[S.RULE_ID]),
                             "explanation": mask(_s(r[S.EXPLANATION])) if mask else _s(r[S.EXPLANATION]),
                             "segments": segments(text, span, mask) if text else [],
                             "kb_answer": None})
        issues.append({"key": key, "label": L[key], "count": int(len(sel)),
                       "convs": int(sel[S.CONVERSATION_ID].nunique()), "examples": examples})
    max_issue = max([i["count"] for i in issues] + [1])
    for i in issues:
        i["w"] = _bucket(100 * i["count"] / max_issue)
    agents = []
    for agent_id, g in conv.groupby(S.AGENT_ID, sort=True):
        k = shop_data.agent_kpis[shop_data.agent_kpis[S.AGENT_ID] == agent_id]
        krow = _kpi_rows(k)[0] if len(k) else {}
        agents.append({"agent_id": str(agent_id), "n": len(g),
                       "mean_total": _f(pd.to_numeric(g[S.TOTAL], errors="coerce").mean()),
                       "neg": int((neg[S.AGENT_ID] == agent_id).sum()), "kpi": krow})
    nights = conv.assign(_t=pd.to_numeric(conv[S.TOTAL], errors="coerce")).groupby(S.NIGHT)["_t"].mean()
    sk = _kpi_rows(shop_data.shop_kpis)
    ctx = _base_ctx(shop_data, locale, f"{L['merchant_report']} · {shop.name if shop else shop_id}",
                    script=False, root="../")
    dist = None if email else charts.data_uri(charts.distribution_chart(_totals(conv), [], agent_label="Shop"))
    ctx.update({
        "shop_id": shop_id, "shop_name": shop.name if shop else shop_id,
        "platform": shop.platform if shop else "", "currency": shop.currency if shop else "",
        "period": (f"{nights.index.min()} – {nights.index.max()}" if len(nights) else ""),
        "kpi": sk[0] if sk else None, "n_conv": len(conv),
        "mean_total": _f(pd.to_numeric(conv[S.TOTAL], errors="coerce").mean()),
        "dims": list(S.DIMENSIONS), "shop_dims": _dim_means(conv),
        "issues": issues, "agents": agents,
        "nights": [{"night": str(n), "mean": _f(v), "w": _bucket(_f(v) or 0)} for n, v in nights.items()],
        "dist_chart": dist, "masked": mask is not None,
    })
    return ctx


def index_context(data: ReportData, idx: ReportIndex) -> dict[str, Any]:
    locale = _locale_for(data.shop_ids(), data)
    L = labels_for(locale)
    conv = data.conversations
    rows = []
    for agent_id, g in conv.groupby(S.AGENT_ID, sort=True):
        k = data.agent_kpis[data.agent_kpis[S.AGENT_ID] == agent_id]
        num = {c: _f(pd.to_numeric(k[c], errors="coerce").mean()) for c in ("first_response_avg_s", "reply_rate")}
        if len(k) and "conversations" in k:
            w = pd.to_numeric(k["conversations"], errors="coerce").fillna(0)
            if w.sum():
                for c in num:
                    num[c] = _f((pd.to_numeric(k[c], errors="coerce") * w).sum() / w.sum())
        fa = data.findings[data.findings[S.AGENT_ID] == agent_id]
        rows.append({
            "agent_id": str(agent_id), "shops": ", ".join(sorted(set(g[S.SHOP_ID].astype(str)))),
            "n": len(g), "mean_total": _f(pd.to_numeric(g[S.TOTAL], errors="coerce").mean()),
            "dims": _dim_means(g), "veto": int(g[S.VETO].fillna(False).astype(bool).sum()),
            "neg": int((fa[S.POLARITY] == "-").sum()), **num,
            "href": idx.agents[str(agent_id)].relative_to(idx.out_dir).as_posix(),
        })
    conv_idx = conv.set_index(S.CONVERSATION_ID)
    rq = data.review_queue.assign(_p=pd.to_numeric(data.review_queue["priority"], errors="coerce"))
    queue = []
    for _, r in rq.sort_values(["_p", S.CONVERSATION_ID], ascending=[False, True]).iterrows():
        cid = str(r[S.CONVERSATION_ID])
        agent = _s(conv_idx.loc[cid][S.AGENT_ID]) if cid in conv_idx.index else ""
        queue.append({"conversation_id": cid, "reason": _s(r["reason"]), "priority": _s(r["priority"]),
                      "agent_id": agent, "shop_id": _s(conv_idx.loc[cid][S.SHOP_ID]) if agent else "",
                      "href": idx.agents[agent].relative_to(idx.out_dir).as_posix() if agent in idx.agents else None})
    ctx = _base_ctx(data, locale, f"{L['overview']} · {data.run_id}", script=True, root="")
    ctx.update({
        "agents": rows, "queue": queue, "rule_hits": _rule_table(data.findings, None),
        "merchants": [{"id": s, "name": _shop_name(data, s),
                       "href": p.relative_to(idx.out_dir).as_posix()} for s, p in idx.merchants.items()],
        "coaching_href": idx.coaching.relative_to(idx.out_dir).as_posix(),
        "n_conv": len(conv), "mean_total": _f(pd.to_numeric(conv[S.TOTAL], errors="coerce").mean()),
    })
    return ctx


def coaching_picks(data: ReportData) -> list[str]:
    """Explicit picks, else review-queue conversations by priority, then each agent's worst."""
    known = set(data.conversations[S.CONVERSATION_ID].astype(str))
    if data.coaching_picks is not None:
        return [c for c in data.coaching_picks if c in known][:COACHING_MAX]
    rq = data.review_queue.assign(_p=pd.to_numeric(data.review_queue["priority"], errors="coerce"))
    picks = [str(c) for c in rq.sort_values(["_p", S.CONVERSATION_ID], ascending=[False, True])[S.CONVERSATION_ID]]
    for _, g in data.conversations.groupby(S.AGENT_ID, sort=True):
        worst, _ = _worst_best(g)
        picks.extend(worst[:1])
    with_findings = set(data.findings[S.CONVERSATION_ID].astype(str))
    seen: list[str] = []
    for c in picks:
        if c in known and c in with_findings and c not in seen:
            seen.append(c)
    return seen[:COACHING_MAX]


def coaching_context(data: ReportData, mask: Mask) -> dict[str, Any]:
    locale = _locale_for(data.shop_ids(), data)
    L = labels_for(locale)
    ctx = _base_ctx(data, locale, f"{L['coaching_pack']} · {data.run_id}", script=False, root="")
    # Printed packs leave the QA room: buyers get aliases and PII is masked, as for merchants.
    aliased, aliases = with_buyer_aliases(data)
    ctx["convs"] = _views(aliased, coaching_picks(data), buyer_masker(aliases, mask), data.kb_answers)
    return ctx


# --- entry points ------------------------------------------------------------------------------

def render_merchant(data: ReportData, shop_id: str, *, mask: Mask | None, env: Environment | None = None,
                    email: bool = False) -> str:
    """One shop's report (or email body before CSS inlining); filters to the shop first."""
    env = env or make_env()
    shop_data = for_shop(data, shop_id)
    m: Mask | None = None
    if mask is not None:
        shop_data, aliases = with_buyer_aliases(shop_data)
        m = buyer_masker(aliases, mask)
    ctx = merchant_context(shop_data, shop_id, mask=m, email=email)
    return env.get_template("email.html" if email else "merchant.html").render(ctx)


def render_reports(data: ReportData, out_dir: Path, *, mask_pii_for_merchants: bool = True,
                   mask: Mask | None = None) -> ReportIndex:
    """Write ``<out_dir>/reports/``: index.html, coaching.html, agents/*.html, merchants/*.html.

    ``mask`` defaults to qa_inspect.text.pii.mask_pii. Merchant reports are masked unless
    ``mask_pii_for_merchants`` is False; the coaching pack (meant to be printed) is always masked.
    """
    data.validate()
    pii = resolve_mask(mask)
    env = make_env()
    root = Path(out_dir) / "reports"
    (root / "agents").mkdir(parents=True, exist_ok=True)
    (root / "merchants").mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    idx = ReportIndex(out_dir=root, index=root / "index.html", coaching=root / "coaching.html")
    for agent_id in sorted(set(data.conversations[S.AGENT_ID].dropna().astype(str))):
        path = safe_path(root / "agents", agent_id, suffix=".html")  # distinct ids -> distinct names
        path.write_text(env.get_template("agent.html").render(agent_context(data, agent_id, mask=pii)),
                        encoding="utf-8")
        idx.agents[agent_id] = path
    for shop_id in data.shop_ids():
        path = safe_path(root / "merchants", shop_id, suffix=".html")
        html = render_merchant(data, shop_id, mask=pii if mask_pii_for_merchants else None, env=env)
        path.write_text(html, encoding="utf-8")
        idx.merchants[shop_id] = path
    idx.coaching.write_text(env.get_template("coaching.html").render(coaching_context(data, pii)),
                            encoding="utf-8")
    idx.index.write_text(env.get_template("index.html").render(index_context(data, idx)), encoding="utf-8")
    return idx
