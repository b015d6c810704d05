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
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from qa_inspect import schema as S
from qa_inspect.heap import release_memory
from qa_inspect.reports import charts
from qa_inspect.reports.data import (
    AUTO_TOTAL,
    ReportData,
    buyer_aliases,
    for_shop,
    needed_only,
    with_buyer_aliases,
)
from qa_inspect.reports.labels import labels_for
from qa_inspect.reports.stats import (
    RULE_KEY,
    RULE_KEY_NAMES,
    FindingStats,
    _Groups,
    finding_stats,
    frame_chunks,
    selling_head,
    sort_rule_rows,
)
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


def buyer_masker(aliases: Mapping[str, str], mask: Mask) -> Mask:
    """Replace buyer nicknames (longest first, then by name: the same order whatever the map's
    order) with aliases, then mask PII.

    Exactly the loop "for each name in that order: replace it if the text contains it", but a
    night has tens of thousands of buyers and a page masks a few hundred short texts: each text's
    substrings of the names' lengths are looked up in the map, and only the names found are
    replaced, in order (the text is searched again after each replacement, since an inserted alias
    may complete another name). An Aho-Corasick automaton over every name did the same search but
    cost ~150 MB for a big shop of a 5M-message night."""
    lengths = sorted({len(n) for n in aliases if len(n) >= 2}, reverse=True)
    if not lengths:
        return mask

    def order(name: str) -> tuple[int, str]:
        return (-len(name), name)

    def run(text: str) -> str:
        done: tuple[int, str] | None = None
        while True:
            found = {text[i:i + k] for k in lengths for i in range(len(text) - k + 1)}
            later = [n for n in found if n in aliases and (done is None or order(n) > done)]
            if not later:
                return mask(text)
            nxt = min(later, key=order)
            text = text.replace(nxt, aliases[nxt])
            done = order(nxt)

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


@lru_cache(maxsize=2)
def page_assets(*, script: bool) -> dict[str, str]:
    """Inline CSS/JS and a CSP that allows exactly them (by hash) and data: images, nothing else."""
    css = _asset("report.css") + _asset("_bar_widths.css")
    js = _asset("table.js") if script else ""
    csp = ("default-src 'none'; img-src data:; style-src " + _sha(css) + "; script-src "
           + (_sha(js) if script else "'none'") + "; base-uri 'none'; form-action 'none'")
    # Markup: these are our own package files, and escaping would corrupt CSS/JS and its hash.
    # Cached: the files are part of the installed package and do not change while it runs.
    return MappingProxyType({"css": Markup(css), "js": Markup(js), "csp": csp})  # type: ignore[return-value]


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


def _nan_last(v: Any) -> tuple[int, Any]:
    x = _f(v)
    return (1, 0.0) if x is None else (0, x)


def _records(df: pd.DataFrame | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return df.to_dict("records") if isinstance(df, pd.DataFrame) else df


def conversation_view(conv: pd.Series, msgs: pd.DataFrame | list[dict[str, Any]],
                      fnd: pd.DataFrame | list[dict[str, Any]], *,
                      kb_answers: dict[str, str], mask: Mask | None) -> dict[str, Any]:
    """A conversation as the templates need it: messages with highlighted spans, numbered findings.

    ``msgs``/``fnd`` may be frames or plain records (see :meth:`RunLookups.records`): per-row
    pandas access dominated the agent pages."""
    fnd_rows = sorted(_records(fnd), key=lambda f: (_nan_last(f[S.MESSAGE_INDEX]), _nan_last(f[S.EVIDENCE_START]),
                                                   _s(f[S.RULE_ID])))
    findings: list[dict[str, Any]] = []
    spans: dict[int, list[tuple[int, int, str, int]]] = {}
    for no, f in enumerate(fnd_rows, start=1):
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
    for m in sorted(_records(msgs), key=lambda m: _nan_last(m[S.SEQ])):
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
    overridden = bool(conv.get(S.OVERRIDDEN)) if _f(conv.get(S.OVERRIDDEN)) is not None else False
    return {
        # ingest's session ids embed the buyer nickname (``shop:<buyer>:<start>``): mask like text
        "id": mask(cid) if mask else cid, "shop_id": _s(conv[S.SHOP_ID]),
        "agent_id": _s(conv[S.AGENT_ID]), "customer_id": _s(conv[S.CUSTOMER_ID]),
        "night": _s(conv[S.NIGHT]), "total": _f(conv[S.TOTAL]), "grade": _s(conv[S.GRADE]),
        # a supervisor's review replaced the automatic total (TOTAL is already the human one)
        "overridden": overridden, "auto_total": _f(conv.get(AUTO_TOTAL)) if overridden else None,
        "veto": bool(conv[S.VETO]) if _f(conv[S.VETO]) is not None else False,
        "veto_rule": _s(conv[S.VETO_RULE]),
        "scores": {d: _f(conv[S.score_column(d)]) for d in S.DIMENSIONS},
        "messages": messages, "findings": findings,
        "conv_findings": [f for f in findings if f["seq"] < 0],
    }


def _positions(df: pd.DataFrame, key: str) -> dict[str, Any]:
    """Row positions per key value, so a lookup is ``df.take(pos)`` instead of a full-frame filter."""
    if df.empty:
        return {}
    return {str(k): v for k, v in df.groupby(key, sort=False, dropna=True).indices.items()}


_CONVERT_ROWS = 100_000  # frames up to this size are converted to object arrays once per run
_VIEW_COLUMNS = frozenset({
    S.SEQ, S.ROLE, S.TS, S.AGENT_ID, S.CUSTOMER_ID, S.TEXT, S.IS_AUTO_REPLY,  # messages
    S.MESSAGE_INDEX, S.RULE_ID, S.SOURCE, S.DIMENSION, S.POLARITY, S.SEVERITY, S.POINTS, S.CONFIDENCE,
    S.EVIDENCE, S.EVIDENCE_START, S.EVIDENCE_END, S.EXPLANATION,  # findings
})


@dataclass
class RunLookups:
    """Per-run lookups built once per :func:`render_reports` call (never module state): row
    positions of every frame by agent / conversation and the team aggregates each agent page
    compares against. Filtering the full frames per agent made 500 agents O(n²)."""

    conv_pos: dict[str, Any]  # conversation id -> position in conversations (first row)
    msgs_by_conv: dict[str, Any]
    finds_by_conv: dict[str, Any]
    conv_by_agent: dict[str, Any]
    kpis_by_agent: dict[str, Any]
    trend_by_agent: dict[str, Any]
    msg_text: dict[tuple[str, int], str]  # (conversation, seq) -> text, of the selling examples only
    selling: list[dict[str, Any]]  # good selling, best first: the head any agent's picks come from
    team_dims: dict[str, float | None]
    team_totals: list[float]
    team_total: float | None
    team_kpis: dict[str, Any]
    nights: list[str]
    team_by_night: dict[str, float | None]
    stats: FindingStats
    charts: charts.AgentCharts | None = None
    _arrays: dict[int, list[tuple[str, Any]]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, data: ReportData, *, with_charts: bool = True) -> RunLookups:
        stats = stats_of(data)
        conv, fnd, tr = data.conversations, data.findings, data.trend
        ids = conv[S.CONVERSATION_ID].astype(str).tolist()
        conv_pos: dict[str, int] = {}
        for i, cid in enumerate(ids):
            conv_pos.setdefault(cid, i)
        nights = sorted(set(tr[S.NIGHT].astype(str)))
        n_tr = pd.to_numeric(tr["n"], errors="coerce").fillna(0)
        mt = pd.to_numeric(tr["mean_total"], errors="coerce")
        tn = tr[S.NIGHT].astype(str)
        team_by_night: dict[str, float | None] = {}
        for night in nights:
            sel = tn == night
            w = n_tr[sel]
            team_by_night[night] = _f((mt[sel] * w).sum() / w.sum()) if w.sum() else _f(mt[sel].mean())
        selling = stats.selling
        m = data.messages
        msgs_by_conv = _positions(m, S.CONVERSATION_ID)
        # texts for the picks of any agent id a caller may ask for: page agents, selling owners, others
        askers = [*_agent_ids(conv), *{r[S.AGENT_ID] for r in selling}, object()]
        msg_text = _texts(m, msgs_by_conv, _selling_conversations(selling, askers))
        team_dims, team_totals = _dim_means(conv), _totals(conv)
        out = cls(
            conv_pos=conv_pos, msgs_by_conv=msgs_by_conv,
            finds_by_conv=_positions(fnd, S.CONVERSATION_ID), conv_by_agent=_positions(conv, S.AGENT_ID),
            kpis_by_agent=_positions(data.agent_kpis, S.AGENT_ID),
            trend_by_agent=_positions(tr, S.AGENT_ID), msg_text=msg_text, selling=selling,
            team_dims=team_dims, team_totals=team_totals,
            team_total=_f(pd.to_numeric(conv[S.TOTAL], errors="coerce").mean()),
            team_kpis=_team_kpis(data.agent_kpis), nights=nights, team_by_night=team_by_night, stats=stats)
        if with_charts:
            per_agent = [_totals(conv.take(p)) for p in out.conv_by_agent.values()]
            out.charts = charts.AgentCharts(team_dims, team_totals, nights, [team_by_night[n] for n in nights],
                                            dist_ymax=charts.dist_ymax(per_agent, team_totals))
        return out

    def rows(self, df: pd.DataFrame, index: dict[str, Any], key: str) -> pd.DataFrame:
        pos = index.get(key)
        return df.iloc[0:0] if pos is None else df.take(pos)

    def records(self, df: pd.DataFrame, index: dict[str, Any], key: str) -> list[dict[str, Any]]:
        """Rows of ``df`` at ``index[key]`` as plain dicts (per-row pandas access dominated the
        agent pages). Small frames are converted to object arrays once; of big ones (a run's
        findings: object arrays of whole columns cost hundreds of MB) only these rows are."""
        pos = index.get(key)
        if pos is None:
            return []
        cols = [c for c in df.columns if c in _VIEW_COLUMNS]
        if len(df) > _CONVERT_ROWS:
            arrays = [(c, df[c].take(pos).to_numpy(dtype=object)) for c in cols]
            return [{c: a[i] for c, a in arrays} for i in range(len(pos))]
        whole = self._arrays.get(id(df))
        if whole is None:
            whole = self._arrays[id(df)] = [(c, df[c].to_numpy(dtype=object)) for c in cols]
        return [{c: a[i] for c, a in whole} for i in pos]


def _agent_ids(conv: pd.DataFrame) -> list[str]:
    """The agents that get a page, in page order."""
    return sorted(set(conv[S.AGENT_ID].dropna().unique().astype(str).tolist()))


_selling_head = selling_head  # the rule lives with the streaming pass (stats.py)


def stats_of(data: ReportData) -> FindingStats:
    """``data.stats``, else the aggregates of ``data.findings`` (which must then be ALL of them)."""
    if data.stats is not None:
        return data.stats
    return finding_stats(frame_chunks(data.findings), kb_answers=data.kb_answers,
                         coaching_candidates=coaching_candidates(data) if data.coaching_picks is None else ())


def with_stats(data: ReportData) -> ReportData:
    """``data`` carrying its findings' aggregates, so its findings may then be cut down."""
    return data if data.stats is not None else replace(data, stats=stats_of(data))


def _selling_picks(selling: list[dict[str, Any]], agent_id: Any) -> list[dict[str, Any]]:
    """The 3 best good-selling findings of agents other than ``agent_id``."""
    picked: list[dict[str, Any]] = []
    for r in selling:
        if len(picked) == 3:
            break
        if r[S.AGENT_ID] != agent_id:
            picked.append(r)
    return picked


def _selling_conversations(selling: list[dict[str, Any]], agents: list[Any]) -> set[str]:
    return {str(r[S.CONVERSATION_ID]) for a in agents for r in _selling_picks(selling, a)}


def _texts(m: pd.DataFrame, by_conv: dict[str, Any], conv_ids: set[str]) -> dict[tuple[str, int], str]:
    """(conversation, seq) -> text of the messages of ``conv_ids`` (a later duplicate wins)."""
    pos = [p for c in sorted(conv_ids) if c in by_conv for p in by_conv[c]]
    sub = m.take(sorted(pos))
    return dict(zip(zip(sub[S.CONVERSATION_ID].astype(str), sub[S.SEQ].tolist(), strict=True),
                    sub[S.TEXT].tolist(), strict=True))


def _views(data: ReportData, conv_ids: list[str], mask: Mask | None,
           kb_answers: dict[str, str], look: RunLookups | None = None) -> list[dict[str, Any]]:
    look = look or RunLookups.build(data, with_charts=False)
    out = []
    for cid in conv_ids:
        if cid not in look.conv_pos:
            continue
        out.append(conversation_view(data.conversations.iloc[look.conv_pos[cid]],
                                     look.records(data.messages, look.msgs_by_conv, cid),
                                     look.records(data.findings, look.finds_by_conv, cid),
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
    """Hits per (rule, source, dimension, polarity): count, points lost/won, first explanation;
    most points first (the pages take these from :class:`FindingStats`; same code, one frame)."""
    f = findings if polarity is None else findings[findings[S.POLARITY] == polarity]
    if f.empty:
        return []
    groups = _Groups()
    for start in range(0, len(f), _CHUNK):  # chunks: Python lists of a run's findings cost 100s of MB
        part = f.iloc[start:start + _CHUNK]
        groups.add([part[c] for c in RULE_KEY],
                   pd.to_numeric(part[S.POINTS], errors="coerce").fillna(0.0).to_numpy(dtype="float64"),
                   part[S.EXPLANATION])
    rows = sort_rule_rows(groups.rows(RULE_KEY_NAMES))
    return rows[:limit] if limit else rows


_CHUNK = 50_000


def _worst_best(conv: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Lowest totals first, ties by conversation id (a sort of (total, id) pairs, vectorised)."""
    t = pd.to_numeric(conv[S.TOTAL], errors="coerce").to_numpy(dtype="float64")
    ok = ~np.isnan(t)
    pairs = sorted(zip(t[ok].tolist(), [str(c) for c in conv[S.CONVERSATION_ID].to_numpy(dtype=object)[ok]],
                       strict=True))
    ids = [c for _, c in pairs]
    # With few conversations keep some for the "best" list: at most half are shown as worst.
    worst = ids[:min(WORST_N, math.ceil(len(ids) / 2))]
    best = [x for x in reversed(ids) if x not in worst][:BEST_N]
    return worst, best


def _good_selling(look: RunLookups, agent_id: str, mask: Mask) -> list[dict[str, Any]]:
    """The 3 best positive selling findings of OTHER agents with the message they praise (PII masked)."""
    out = []
    for r in _selling_picks(look.selling, agent_id):
        text = look.msg_text.get((str(r[S.CONVERSATION_ID]), int(r[S.MESSAGE_INDEX])))
        if text is None:
            continue
        span = [(int(r[S.EVIDENCE_START]), int(r[S.EVIDENCE_END]), "+", 1)]
        out.append({"agent_id": _s(r[S.AGENT_ID]), "rule_id": _s(r[S.RULE_ID]),
                    "explanation": _s(r[S.EXPLANATION]), "segments": segments(_s(text), span, mask)})
    return out


# --- pages -------------------------------------------------------------------------------------

def _base_ctx(data: ReportData, locale: str, title: str, *, script: bool, root: str) -> dict[str, Any]:
    return {"L": labels_for(locale), "lang": locale, "title": title, "run_id": data.run_id,
            "generated_at": data.generated_at.strftime("%Y-%m-%d %H:%M"), "root": root,
            "dims": list(S.DIMENSIONS), **page_assets(script=script)}


def agent_context(data: ReportData, agent_id: str, *, mask: Mask, look: RunLookups | None = None) -> dict[str, Any]:
    """Context of one agent's page. Pass ``look`` (built once per run) when rendering many agents."""
    look = look or RunLookups.build(data)
    conv = look.rows(_page_columns(data.conversations), look.conv_by_agent, agent_id)
    shop_ids = sorted(set(conv[S.SHOP_ID].astype(str).tolist()))  # tolist: no per-row pandas iteration
    locale = _locale_for(shop_ids, data)
    L = labels_for(locale)
    me_dims = _dim_means(conv)
    nights = look.nights
    my_trend = look.rows(data.trend, look.trend_by_agent, agent_id)
    mine = {str(n): _f(v) for n, v in zip(my_trend[S.NIGHT], my_trend["mean_total"], strict=True)}
    kit = look.charts
    assert kit is not None, "RunLookups.build(with_charts=True) is needed for agent pages"
    trend_svg = kit.trend([mine.get(n) for n in nights], label=L["trend"])
    # Markup: charts.py escapes every text it puts into the SVG (labels, night names)
    charts_ = {
        "dims": Markup(kit.dimensions(me_dims, label=L["dimension_scores"])),
        "dist": Markup(kit.distribution(_totals(conv), label=L["distribution"])),
        "trend": Markup(trend_svg) if trend_svg is not None else None,
    }
    worst, best = _worst_best(conv)
    ctx = _base_ctx(data, locale, f"{L['agent_report']} · {agent_id}", script=False, root="../")
    ctx.update({
        "agent_id": agent_id,
        "shops": [{"id": s, "name": _shop_name(data, s)} for s in shop_ids],
        "kpis": _kpi_rows(look.rows(data.agent_kpis, look.kpis_by_agent, agent_id)),
        "team_kpis": look.team_kpis,
        "n_conv": len(conv), "mean_total": _f(pd.to_numeric(conv[S.TOTAL], errors="coerce").mean()),
        "team_total": look.team_total,
        "me_dims": me_dims, "team_dims": look.team_dims, "charts": charts_,
        "trend_rows": [{"night": n, "me": mine.get(n), "team": look.team_by_night[n]} for n in nights],
        "deductions": look.stats.deductions.get(agent_id, [])[:10],
        "worst": _views(data, worst, None, data.kb_answers, look),
        "best": _views(data, best, None, data.kb_answers, look),
        "suggestions": look.stats.suggestions.get(agent_id, [])[:10],
        "good_selling": _good_selling(look, agent_id, mask),
        "veto_count": int(conv[S.VETO].fillna(False).astype(bool).sum()),
        "overridden_count": int(_overridden(conv).sum()),
    })
    return ctx


def _page_columns(conv: pd.DataFrame, *extra: str) -> pd.DataFrame:
    """The conversation columns the agent page and the overview's agent rows read: taking a
    night's wide frame (30 columns) per agent cost more than the rest of the page context."""
    want = (*extra, S.CONVERSATION_ID, S.SHOP_ID, S.TOTAL, S.VETO, S.OVERRIDDEN,
            *(S.score_column(d) for d in S.DIMENSIONS))
    return conv[[c for c in want if c in conv.columns]]


def _overridden(conv: pd.DataFrame) -> pd.Series:
    """Which conversations' totals a supervisor's review replaced (False without the column)."""
    if S.OVERRIDDEN not in conv.columns:
        return pd.Series(False, index=conv.index)
    return conv[S.OVERRIDDEN].astype("boolean").fillna(False).astype(bool)


def merchant_context(shop_data: ReportData, shop_id: str, *, mask: Mask | None, email: bool = False) -> dict[str, Any]:
    """Context for one shop's report or email. ``shop_data`` must come from :func:`for_shop`."""
    shop = shop_data.shops.get(shop_id)
    locale = shop.locale if shop else "zh-CN"
    L = labels_for(locale)
    conv = shop_data.conversations
    st = stats_of(shop_data)
    issues = []
    for key, issue in st.shop_issues(shop_id).items():
        examples = []
        msgs = shop_data.messages
        for r in issue.examples:
            m = msgs[(msgs[S.CONVERSATION_ID] == r[S.CONVERSATION_ID]) & (msgs[S.SEQ] == r[S.MESSAGE_INDEX])]
            text = _s(m.iloc[0][S.TEXT]) if len(m) else ""
            span = [(int(r[S.EVIDENCE_START]), int(r[S.EVIDENCE_END]), "-", 1)]
            examples.append({"agent_id": _s(r[S.AGENT_ID]), "rule_id": _s(r[S.RULE_ID]),
                             "explanation": mask(_s(r[S.EXPLANATION])) if mask else _s(r[S.EXPLANATION]),
                             "segments": segments(text, span, mask) if text else [],
                             "kb_answer": None})
        issues.append({"key": key, "label": L[key], "count": issue.count, "convs": issue.convs,
                       "examples": examples})
    max_issue = max([i["count"] for i in issues] + [1])
    for i in issues:
        i["w"] = _bucket(100 * i["count"] / max_issue)
    agents = []
    shop_neg = st.shop_agent_neg.get(shop_id, {})
    for agent_id, g in conv[[S.AGENT_ID, S.TOTAL]].groupby(S.AGENT_ID, sort=True):
        k = shop_data.agent_kpis[shop_data.agent_kpis[S.AGENT_ID] == agent_id]
        krow = _kpi_rows(k)[0] if len(k) else {}
        agents.append({"agent_id": str(agent_id), "n": len(g),
                       "mean_total": _f(pd.to_numeric(g[S.TOTAL], errors="coerce").mean()),
                       "neg": shop_neg.get(str(agent_id), 0), "kpi": krow})
    nights = conv.assign(_t=pd.to_numeric(conv[S.TOTAL], errors="coerce")).groupby(S.NIGHT)["_t"].mean()
    sk = _kpi_rows(shop_data.shop_kpis)
    ctx = _base_ctx(shop_data, locale, f"{L['merchant_report']} · {shop.name if shop else shop_id}",
                    script=False, root="../")
    dist = None if email else charts.data_uri(charts.shop_distribution_png(_totals(conv), label="Shop"))
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


def index_context(data: ReportData, idx: ReportIndex, look: RunLookups | None = None) -> dict[str, Any]:
    locale = _locale_for(data.shop_ids(), data)
    L = labels_for(locale)
    look = look or RunLookups.build(data, with_charts=False)
    conv = data.conversations
    rows = []
    for agent_id, g in _page_columns(conv, S.AGENT_ID).groupby(S.AGENT_ID, sort=True):
        k = look.rows(data.agent_kpis, look.kpis_by_agent, str(agent_id))
        num = {c: _f(pd.to_numeric(k[c], errors="coerce").mean()) for c in ("first_response_avg_s", "reply_rate")}
        if len(k) and "conversations" in k:
            w = pd.to_numeric(k["conversations"], errors="coerce").fillna(0)
            if w.sum():
                for c in num:
                    num[c] = _f((pd.to_numeric(k[c], errors="coerce") * w).sum() / w.sum())
        rows.append({
            "agent_id": str(agent_id), "shops": ", ".join(sorted(set(g[S.SHOP_ID].astype(str).tolist()))),
            "n": len(g), "mean_total": _f(pd.to_numeric(g[S.TOTAL], errors="coerce").mean()),
            "dims": _dim_means(g), "veto": int(g[S.VETO].fillna(False).astype(bool).sum()),
            "overridden": int(_overridden(g).sum()),
            "neg": look.stats.agent_neg.get(str(agent_id), 0), **num,
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
        "agents": rows, "queue": queue, "rule_hits": look.stats.rule_hits,
        "merchants": [{"id": s, "name": _shop_name(data, s),
                       "href": p.relative_to(idx.out_dir).as_posix()} for s, p in idx.merchants.items()],
        "coaching_href": idx.coaching.relative_to(idx.out_dir).as_posix(),
        "n_conv": len(conv), "mean_total": _f(pd.to_numeric(conv[S.TOTAL], errors="coerce").mean()),
    })
    return ctx


def coaching_candidates(data: ReportData) -> list[str]:
    """Review-queue conversations by priority, then each agent's worst (before the filters)."""
    rq = data.review_queue.assign(_p=pd.to_numeric(data.review_queue["priority"], errors="coerce"))
    picks = [str(c) for c in rq.sort_values(["_p", S.CONVERSATION_ID], ascending=[False, True])[S.CONVERSATION_ID]]
    for _, g in data.conversations[[S.AGENT_ID, S.TOTAL, S.CONVERSATION_ID]].groupby(S.AGENT_ID, sort=True):
        worst, _ = _worst_best(g)
        picks.extend(worst[:1])
    return picks


def coaching_picks(data: ReportData) -> list[str]:
    """Explicit picks, else review-queue conversations by priority, then each agent's worst."""
    known = set(data.conversations[S.CONVERSATION_ID].astype(str).tolist())
    if data.coaching_picks is not None:
        return [c for c in data.coaching_picks if c in known][:COACHING_MAX]
    picks = coaching_candidates(data)
    with_findings = stats_of(data).with_findings
    seen: list[str] = []
    for c in picks:
        if c in known and c in with_findings and c not in seen:
            seen.append(c)
    return seen[:COACHING_MAX]


def needed_conversations(data: ReportData) -> set[str]:
    """Ids of exactly the conversations whose messages some page or email shows: each agent's
    worst/best, the good-selling examples, the merchants' issue examples and the coaching pack.

    Reads conversations, findings, review queue and coaching picks, never ``data.messages``, so
    a run can load only these conversations' messages (``messages`` may be empty here); pages
    rendered from the restricted frame are byte-identical (pass ``buyers`` too, see ReportData).
    """
    data = with_stats(data)
    stats = stats_of(data)
    conv = data.conversations
    need: set[str] = set()
    by_agent = _positions(conv, S.AGENT_ID)
    agents = _agent_ids(conv)
    narrow = conv[[S.TOTAL, S.CONVERSATION_ID]]  # all _worst_best reads
    for agent_id in agents:
        pos = by_agent.get(agent_id)
        if pos is not None:
            worst, best = _worst_best(narrow.take(pos))
            need.update(worst, best)
    need |= _selling_conversations(stats.selling, agents)
    for shop_id in data.shop_ids():
        for issue in stats.shop_issues(shop_id).values():
            need.update(str(r[S.CONVERSATION_ID]) for r in issue.examples)
    need.update(coaching_picks(data))
    return need


def coaching_context(data: ReportData, mask: Mask) -> dict[str, Any]:
    """The printed coaching pack: the picked conversations, buyers aliased and PII masked."""
    locale = _locale_for(data.shop_ids(), data)
    L = labels_for(locale)
    ctx = _base_ctx(data, locale, f"{L['coaching_pack']} · {data.run_id}", script=False, root="")
    # Printed packs leave the QA room: buyers get aliases and PII is masked, as for merchants.
    picks = coaching_picks(data)
    aliased, aliases = with_buyer_aliases(data, set(picks))
    ctx["convs"] = _views(aliased, picks, buyer_masker(aliases, mask), data.kb_answers)
    return ctx


# --- entry points ------------------------------------------------------------------------------

# conversation columns merchant_context reads (the rest of a night's frame is not copied per shop)
MERCHANT_COLUMNS = (S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.CUSTOMER_ID, S.NIGHT, S.TOTAL,
                    *(S.score_column(d) for d in S.DIMENSIONS))


def render_merchant(data: ReportData, shop_id: str, *, mask: Mask | None, env: Environment | None = None,
                    email: bool = False) -> str:
    """One shop's report (or email body before CSS inlining); filters to the shop first."""
    env = env or make_env()
    # the shop's copy takes only the conversation columns a merchant page reads (a big shop of a
    # 5M-message night: 170k rows of 30 columns were copied for 8)
    conv = data.conversations
    shop_data = for_shop(replace(data, conversations=conv[[c for c in MERCHANT_COLUMNS if c in conv.columns]]),
                         shop_id)
    m: Mask | None = None
    if mask is not None:
        aliases = buyer_aliases(shop_data)
        # the page shows no conversation's buyer: the column goes instead of being aliased row by row
        shop_data, _ = with_buyer_aliases(
            replace(shop_data, conversations=shop_data.conversations.drop(columns=[S.CUSTOMER_ID], errors="ignore")),
            aliases=aliases)
        m = buyer_masker(aliases, mask)
    ctx = merchant_context(shop_data, shop_id, mask=m, email=email)
    return env.get_template("email.html" if email else "merchant.html").render(ctx)


AGENT_TASKS = 4  # agent-page batches offered to an executor (the caller renders those not started)
# conversation columns the agent pages read (agent_context, conversation_view): the rest of the
# night's frame is not pickled for the pool
AGENT_PAGE_COLUMNS = (S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.CUSTOMER_ID, S.NIGHT, S.TOTAL, S.GRADE,
                      S.VETO, S.VETO_RULE, S.OVERRIDDEN, AUTO_TOTAL, *(S.score_column(d) for d in S.DIMENSIONS))
# Above this many bytes of conversations the agent pages stay in the caller: each worker would
# hold a copy (5M messages, two workers: the tree's peak 1,575 -> 2,116 MiB with ~150 MB of data)
POOL_PAYLOAD_MAX = 48 * 2**20


def render_agent_pages(payload: bytes, root: Path, agent_ids: list[str], mask: Mask) -> None:
    """Agent pages of ``agent_ids`` into ``root/agents``: a task for another process (module level,
    arguments pickled). ``payload``: ``pickle.dumps((data, look))`` made once by the caller."""
    import pickle

    data, look = pickle.loads(payload)
    _write_agent_pages(data, look, root, agent_ids, mask, make_env())
    del data, look
    release_memory()  # the worker lives on (the run's pool): its copy of the data must not stay


def _write_agent_pages(data: ReportData, look: RunLookups, root: Path, agent_ids: list[str], mask: Mask,
                       env: Environment) -> None:
    tpl = env.get_template("agent.html")
    for agent_id in agent_ids:
        path = safe_path(root / "agents", agent_id, suffix=".html")  # distinct ids -> distinct names
        path.write_text(tpl.render(agent_context(data, agent_id, mask=mask, look=look)), encoding="utf-8")


def render_reports(data: ReportData, out_dir: Path, *, mask_pii_for_merchants: bool = True,
                   mask: Mask | None = None, executor: Executor | None = None) -> ReportIndex:
    """Write ``<out_dir>/reports/``: index.html, coaching.html, agents/*.html, merchants/*.html.

    ``mask`` defaults to qa_inspect.text.pii.mask_pii. Merchant reports are masked unless
    ``mask_pii_for_merchants`` is False; the coaching pack (meant to be printed) is always masked.

    ``executor``: a process pool on this machine (the pipeline's, once its workers are free) is
    offered the agent pages in a few batches while this process renders the merchant pages, the
    overview and the coaching pack; the batches it has not started by then are taken back and
    rendered here, so a busy pool costs nothing but one pickling of the data. The mask must then
    be picklable (a module-level function).
    """
    import pickle

    data.validate()
    # The pages show a few hundred conversations: drop the other messages and findings before
    # the per-shop and aliased copies are made (data with stats: the caller has cut them already
    # or chose not to; the pages are the same either way).
    data = needed_only(data) if data.stats is None else data
    pii = resolve_mask(mask)
    env = make_env()
    root = Path(out_dir) / "reports"
    (root / "agents").mkdir(parents=True, exist_ok=True)
    (root / "merchants").mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    idx = ReportIndex(out_dir=root, index=root / "index.html", coaching=root / "coaching.html")
    look = RunLookups.build(data)  # grouped once: per-agent pages must not filter the full frames
    agent_ids = _agent_ids(data.conversations)
    for agent_id in agent_ids:
        idx.agents[agent_id] = safe_path(root / "agents", agent_id, suffix=".html")
    offered: list[tuple[list[str], Future[None]]] = []
    conv = data.conversations
    page_data = replace(data, conversations=conv[[c for c in AGENT_PAGE_COLUMNS if c in conv.columns]])
    if (executor is not None and len(agent_ids) > 1
            and page_data.conversations.memory_usage(deep=True).sum() <= POOL_PAYLOAD_MAX):
        # pickled here, before this process fills look's row cache (keyed by object ids)
        payload = pickle.dumps((page_data, replace(look, _arrays={})), protocol=pickle.HIGHEST_PROTOCOL)
        size = -(-len(agent_ids) // AGENT_TASKS)
        offered = [(agent_ids[k:k + size], executor.submit(render_agent_pages, payload, root,
                                                            agent_ids[k:k + size], pii))
                   for k in range(0, len(agent_ids), size)]
        del payload
    else:
        _write_agent_pages(data, look, root, agent_ids, pii, env)
    del page_data
    for shop_id in data.shop_ids():
        path = safe_path(root / "merchants", shop_id, suffix=".html")
        html = render_merchant(data, shop_id, mask=pii if mask_pii_for_merchants else None, env=env)
        path.write_text(html, encoding="utf-8")
        idx.merchants[shop_id] = path
        release_memory()  # the shop's copies are garbage now: their pages must not add up
    idx.index.write_text(env.get_template("index.html").render(index_context(data, idx, look)), encoding="utf-8")
    for ids, fut in offered:  # the batches the pool has not started: rendered here
        if fut.cancel():
            _write_agent_pages(data, look, root, ids, pii, env)
    del look  # the coaching pack builds its own lookups over the aliased copy: keep the peak down
    idx.coaching.write_text(env.get_template("coaching.html").render(coaching_context(data, pii)),
                            encoding="utf-8")
    for _ids, fut in offered:
        if not fut.cancelled():
            fut.result()  # a worker's error is this call's error
    return idx
