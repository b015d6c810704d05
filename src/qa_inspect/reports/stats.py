"""What the report pages need over ALL of a run's findings, in one streaming pass.

A night has hundreds of thousands of finding rows (~500 B each, explanation and evidence text)
but the pages show a few hundred of them. :func:`finding_stats` reads the findings in chunks, in
row order (the store's scan order, or a frame's), and keeps only the aggregates: rule-hit tables,
per-agent counts and coaching suggestions, the selling head and the merchants' issue examples.
The full rows are then loaded only for the conversations the pages show. Every aggregate keeps
the exact semantics of the per-frame code it replaces, including ties (first row wins) and
floating-point sums (added in row order, as a Python loop would).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from qa_inspect import schema as S
from qa_inspect.heap import release_memory

CHUNK_ROWS = 20_000
TRIM_EVERY = 10  # chunks between heap trims in the streaming pass
SUGGESTIONS_MAX = 10
ISSUE_EXAMPLES = 3

# merchant page issues: predicate over negative findings (a frame), evaluated per chunk
ISSUES: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "issue_knowledge": lambda f: (f[S.SOURCE] == "knowledge") | (f[S.DIMENSION] == "product_knowledge"),
    "issue_attitude": lambda f: f[S.DIMENSION] == "attitude",
    "issue_responsiveness": lambda f: f[S.DIMENSION] == "responsiveness",
}
RULE_KEY = (S.RULE_ID, S.SOURCE, S.DIMENSION, S.POLARITY)
_ROW = "_row"
_P = "_p"


def _s(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def kb_reference(explanation: str) -> str | None:
    """The knowledge-base side of a knowledge finding's explanation ("…，知识库: <reference>")."""
    if "知识库" not in explanation:
        return None
    ref = explanation.split("知识库", 1)[1].lstrip(" :：")
    return ref or None


def selling_head(agents: list[Any]) -> int:
    """How many of the best selling findings (owners ``agents``, best first) any agent's picks can
    come from: each agent takes the first 3 of OTHER agents, so stop once every agent has 3."""
    counts: dict[Any, int] = {}
    top = 0
    for n, a in enumerate(agents, start=1):
        counts[a] = counts.get(a, 0) + 1
        top = max(top, counts[a])
        if n - top >= 3:
            return n
    return len(agents)


def sort_rule_rows(groups: dict[tuple[str, ...], dict[str, Any]]) -> list[dict[str, Any]]:
    """Most points first, then most hits, then rule id; remaining ties in key order."""
    return sorted((groups[k] for k in sorted(groups)), key=lambda r: (-r["points"], -r["count"], r["rule_id"]))


@dataclass
class ShopIssue:
    """One merchant issue: negative findings, distinct conversations and the example rows."""

    count: int = 0
    convs: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FindingStats:
    """Everything the pages read over all findings (see the module docstring).

    ``rule_hits``: the overview's table (all polarities, sorted). ``deductions``: per agent, the
    negative rule table (sorted, whole). ``agent_neg``: negative findings per agent (str id).
    ``suggestions``: per agent, up to 10 coaching suggestions (from ``kb_answers`` at build time).
    ``selling``: positive selling findings on a message, best first, as far as any agent's picks
    can reach. ``issues``/``shop_agent_neg``: per finding shop, the merchant page's issues and
    negative findings per agent. ``with_findings``: which of the coaching candidates have findings.
    """

    rule_hits: list[dict[str, Any]]
    deductions: dict[str, list[dict[str, Any]]]
    agent_neg: dict[str, int]
    suggestions: dict[str, list[dict[str, str]]]
    selling: list[dict[str, Any]]
    issues: dict[str, dict[str, ShopIssue]]
    shop_agent_neg: dict[str, dict[str, int]]
    with_findings: frozenset[str]

    def for_shop(self, shop_id: str) -> FindingStats:
        """Only ``shop_id``'s merchant aggregates (the merchant pages read nothing else)."""
        return FindingStats(rule_hits=[], deductions={}, agent_neg={}, suggestions={}, selling=[],
                            issues={shop_id: self.issues[shop_id]} if shop_id in self.issues else {},
                            shop_agent_neg={shop_id: self.shop_agent_neg.get(shop_id, {})},
                            with_findings=frozenset())

    def shop_issues(self, shop_id: str) -> dict[str, ShopIssue]:
        got = self.issues.get(shop_id, {})
        return {k: got.get(k, ShopIssue()) for k in ISSUES}

    def example_conversations(self) -> set[str]:
        return {str(r[S.CONVERSATION_ID]) for by in self.issues.values() for i in by.values() for r in i.examples}


class _Groups:
    """count, points summed in row order (``np.add.at`` is unbuffered and goes in index order:
    the same floats as ``g += p`` row by row) and the first non-empty explanation, per key."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, ...], int] = {}
        self.count = np.zeros(0, dtype=np.int64)
        self.points = np.zeros(0, dtype=np.float64)
        self.example: list[str] = []

    def add(self, keys: list[pd.Series], pts: np.ndarray, expl: pd.Series) -> None:
        if not len(pts):
            return
        codes, uniques = [], []
        for k in keys:
            c, u = pd.factorize(k, use_na_sentinel=False)
            codes.append(c.astype(np.int64))
            uniques.append([_s(v) for v in u])
        dims = tuple(max(len(u), 1) for u in uniques)
        flat = np.ravel_multi_index(codes, dims)
        combos, local = np.unique(flat, return_inverse=True)
        gmap = np.empty(len(combos), dtype=np.int64)
        for i, combo in enumerate(combos.tolist()):
            key = tuple(u[j] for u, j in zip(uniques, np.unravel_index(combo, dims), strict=True))
            gmap[i] = self.ids.setdefault(key, len(self.ids))
        n = len(self.ids)
        if n > len(self.count):
            self.count = np.concatenate([self.count, np.zeros(n - len(self.count), dtype=np.int64)])
            self.points = np.concatenate([self.points, np.zeros(n - len(self.points))])
            self.example.extend([""] * (n - len(self.example)))
        gid = gmap[local.reshape(-1)]
        self.count += np.bincount(gid, minlength=n)
        np.add.at(self.points, gid, pts)
        lacking = np.array([not e for e in self.example], dtype=bool)
        if lacking.any():  # only the first non-empty explanation of a group still without one is read
            cand = np.flatnonzero(lacking[gid] & (expl.fillna("") != "").to_numpy(dtype=bool))
            firsts, at = np.unique(gid[cand], return_index=True)
            texts = expl.iloc[cand[at]].tolist()
            for g, text in zip(firsts.tolist(), texts, strict=True):
                self.example[g] = _s(text)

    def rows(self, names: tuple[str, ...], *, strip: int = 0) -> dict[tuple[str, ...], dict[str, Any]]:
        """Key -> table row; ``strip`` leading key parts (the agent) are dropped from the key."""
        out: dict[tuple[str, ...], dict[str, Any]] = {}
        for key, g in self.ids.items():
            row: dict[str, Any] = dict(zip(names, key[strip:], strict=True))
            row.update(count=int(self.count[g]), points=float(self.points[g]), example=self.example[g])
            out[key] = row
        return out


def frame_chunks(findings: pd.DataFrame, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """A findings frame in row-order slices (what :func:`finding_stats` reads)."""
    for start in range(0, len(findings), rows):
        yield findings.iloc[start:start + rows]


def _top_rows(frame: pd.DataFrame, by: list[str], n: int) -> pd.DataFrame:
    """Per ``by`` group: best conversations by (_p desc, conversation asc, row asc), one row each."""
    f = frame.sort_values([_P, S.CONVERSATION_ID, _ROW], ascending=[False, True, True], kind="stable")
    f = f.drop_duplicates([*by, S.CONVERSATION_ID])
    return f.groupby(by, sort=False).head(n)


def _cut(p: np.ndarray, owners: np.ndarray, *, distinct: bool) -> np.ndarray:
    """Rows that can be in the head of the (_p desc, ...) order: those with _p >= v for the
    largest v whose rows (a prefix of EVERY tie order) already hold 3 distinct owners
    (``distinct``: the issue examples' conversations) or 3 rows beyond the most frequent owner
    (the selling head). Lets the exact sort run on a handful of rows instead of a chunk's.
    Missing owners count as one owner: that can only keep more rows.

    Walks the tie groups from the top value down (a max per group instead of sorting the whole
    chunk: the head is usually the first group or two); :func:`_cut_sorted` is the plain version."""
    if np.isnan(p).any():
        return _cut_sorted(p, owners, distinct=distinct)
    counts: dict[Any, int] = {}
    top = seen = 0
    rest = np.ones(len(p), dtype=bool)
    while rest.any():
        v = p[rest].max()
        group = np.flatnonzero(rest & (p == v))
        rest[group] = False
        for o in owners[group].tolist():
            o = _MISSING if o is None or (isinstance(o, float) and math.isnan(o)) or o is pd.NA else o
            counts[o] = counts.get(o, 0) + 1
            top = max(top, counts[o])
        seen += len(group)
        if (len(counts) >= 3) if distinct else (seen - top >= 3):  # both only grow: checked per group
            return p >= v
    return np.ones(len(p), dtype=bool)


def _cut_sorted(p: np.ndarray, owners: np.ndarray, *, distinct: bool) -> np.ndarray:
    """:func:`_cut` by one stable sort and a walk row by row (the reference; also used with NaN)."""
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    counts: dict[Any, int] = {}
    top = 0
    last = len(order) - 1
    for i, j in enumerate(order.tolist()):
        o = owners[j]
        o = _MISSING if o is None or (isinstance(o, float) and math.isnan(o)) or o is pd.NA else o
        counts[o] = counts.get(o, 0) + 1
        top = max(top, counts[o])
        done = len(counts) >= 3 if distinct else i + 1 - top >= 3
        if done and (i == last or ps[i + 1] != ps[i]):
            return p >= ps[i]
    return np.ones(len(p), dtype=bool)


_MISSING = object()


class _Distinct:
    """The number of distinct conversation ids seen, kept as Arrow strings (deduplicated every few
    chunks) instead of a Python set: a shop's issue touches up to every conversation of the night
    (~140k ids per 1M messages over the issues, ~100 B each as set members)."""

    def __init__(self) -> None:
        self.parts: list[pa.Array] = []
        self.pending = 0

    def add(self, ids: np.ndarray) -> None:
        u = pd.unique(ids)
        u = u[~pd.isna(u)]
        if not len(u):
            return
        self.parts.append(pa.array([x if isinstance(x, str) else str(x) for x in u.tolist()], type=pa.string()))
        self.pending += len(u)
        if self.pending > 50_000:
            self.parts, self.pending = [pc.unique(pa.chunked_array(self.parts, type=pa.string()))], 0

    def count(self) -> int:
        return len(pc.unique(pa.chunked_array(self.parts, type=pa.string()))) if self.parts else 0


def finding_stats(chunks: Iterable[pd.DataFrame], *, coaching_candidates: Iterable[str] = (),
                  kb_answers: dict[str, str] | None = None) -> FindingStats:
    """One pass over the findings (chunks in row order, columns of schema.FINDING_COLUMNS)."""
    kb = kb_answers or {}
    candidates = set(coaching_candidates)
    cand_list = sorted(candidates)
    overall, per_agent = _Groups(), _Groups()
    agent_neg: dict[str, int] = {}
    suggestions: dict[str, list[dict[str, str]]] = {}
    seen: dict[str, set[tuple[str, str]]] = {}
    selling: pd.DataFrame | None = None
    examples: pd.DataFrame | None = None
    counts: dict[tuple[str, str], int] = {}
    conv_sets: dict[tuple[str, str], _Distinct] = {}
    shop_agent_neg: dict[str, dict[str, int]] = {}
    with_findings: set[str] = set()
    base = 0
    for i, f in enumerate(chunks):
        n = len(f)
        if i % TRIM_EVERY == TRIM_EVERY - 1:
            release_memory()
        if not n:
            continue
        f = f.set_axis(pd.RangeIndex(base, base + n))
        base += n
        pts = pd.to_numeric(f[S.POINTS], errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)
        overall.add([f[c] for c in RULE_KEY], pts, f[S.EXPLANATION])
        is_neg = (f[S.POLARITY] == "-").fillna(False).to_numpy(dtype=bool)
        has_agent = f[S.AGENT_ID].notna().to_numpy(dtype=bool)
        mine = is_neg & has_agent
        na = f.loc[mine, [S.AGENT_ID, *RULE_KEY, S.EXPLANATION, S.EVIDENCE]]
        agents = na[S.AGENT_ID].astype(str)
        per_agent.add([agents, *(na[c] for c in RULE_KEY)], pts[mine], na[S.EXPLANATION])
        for a, k in agents.value_counts(sort=False).items():
            agent_neg[str(a)] = agent_neg.get(str(a), 0) + int(k)
        _suggest(na, agents, kb, suggestions, seen)
        if candidates:
            ids = f[S.CONVERSATION_ID]
            with_findings.update(str(c) for c in ids[ids.astype(str).isin(cand_list)].unique().tolist())
        # selling: the head of (previous head + this chunk) holds the head of everything so far
        is_sel = ((f[S.POLARITY] == "+") & (f[S.DIMENSION] == "selling") & (f[S.MESSAGE_INDEX] >= 0)).fillna(False)
        at = np.flatnonzero(is_sel.to_numpy(dtype=bool))
        if len(at):
            keep = at[_cut(pts[at], f[S.AGENT_ID].to_numpy(dtype=object)[at], distinct=False)]
            sel = f.take(keep).assign(**{_P: pts[keep], _ROW: keep + (base - n)})
            both = sel if selling is None else pd.concat([selling, sel])
            both = both.sort_values([_P, S.CONVERSATION_ID, _ROW], ascending=[False, True, True], kind="stable")
            selling = both.iloc[:selling_head(both[S.AGENT_ID].tolist())]
        # merchants: per finding shop and issue, on narrow columns; full rows only for example candidates
        has_shop = is_neg & f[S.SHOP_ID].notna().to_numpy(dtype=bool)
        sn = f.loc[has_shop, [S.SHOP_ID, S.AGENT_ID, S.CONVERSATION_ID, S.SOURCE, S.DIMENSION]]
        if len(sn):
            sn_pts = pts[has_shop]
            for (shop, agent), k in sn.groupby([S.SHOP_ID, S.AGENT_ID], sort=False).size().items():
                d = shop_agent_neg.setdefault(str(shop), {})
                d[str(agent)] = d.get(str(agent), 0) + int(k)
            parts: list[np.ndarray] = []  # chunk positions of the example candidates, per (issue, shop)
            labels: list[str] = []
            # shops as integer codes: comparing an object array of names per (issue, shop) was slow
            shop_codes, shop_names = pd.factorize(sn[S.SHOP_ID].astype(str).to_numpy(dtype=object))
            code_of = {str(name): code for code, name in enumerate(shop_names.tolist())}
            convs = sn[S.CONVERSATION_ID].to_numpy(dtype=object)
            for key, pick in ISSUES.items():
                hit = pick(sn).fillna(False).to_numpy(dtype=bool)
                for shop in sorted(str(shop_names[c]) for c in np.unique(shop_codes[hit]).tolist()):
                    rows = np.flatnonzero(hit & (shop_codes == code_of[shop]))
                    counts[(shop, key)] = counts.get((shop, key), 0) + len(rows)
                    conv_sets.setdefault((shop, key), _Distinct()).add(convs[rows])
                    rows = rows[_cut(sn_pts[rows], convs[rows], distinct=True)]
                    parts.append(sn.index.to_numpy()[rows] - (base - n))
                    labels.extend([key] * len(rows))
            if parts:
                # one take of all candidates (a take per part cost a pyarrow call per column each)
                pos = np.concatenate(parts)
                cand = f.take(pos).assign(**{_P: pts[pos], _ROW: pos + (base - n), "_issue": labels})
                both = cand if examples is None else pd.concat([examples, cand])
                examples = _top_rows(both, ["_issue", S.SHOP_ID], ISSUE_EXAMPLES)
    release_memory()
    issues: dict[str, dict[str, ShopIssue]] = {}
    for (shop, key), k in counts.items():
        issues.setdefault(shop, {})[key] = ShopIssue(count=k, convs=conv_sets[(shop, key)].count())
    if examples is not None:
        ex = examples.sort_values([_P, S.CONVERSATION_ID, _ROW], ascending=[False, True, True], kind="stable")
        for rec in ex.drop(columns=[_ROW]).to_dict("records"):
            issues[str(rec[S.SHOP_ID])][rec.pop("_issue")].examples.append(rec)
    deductions: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {}
    for key, row in per_agent.rows(RULE_KEY_NAMES, strip=1).items():
        deductions.setdefault(key[0], {})[key[1:]] = row
    return FindingStats(
        rule_hits=sort_rule_rows(overall.rows(RULE_KEY_NAMES)),
        deductions={a: sort_rule_rows(g) for a, g in deductions.items()},
        agent_neg=agent_neg, suggestions=suggestions,
        selling=[] if selling is None else selling.drop(columns=[_ROW]).to_dict("records"),
        issues=issues, shop_agent_neg=shop_agent_neg, with_findings=frozenset(with_findings))


RULE_KEY_NAMES = ("rule_id", "source", "dimension", "polarity")


def _suggest(na: pd.DataFrame, agents: pd.Series, kb: dict[str, str],
             out: dict[str, list[dict[str, str]]], seen: dict[str, set[tuple[str, str]]]) -> None:
    """Coaching suggestions of negative rows, in row order, until an agent has 10: one per
    wrong claim, with the KB's reference answer (``kb`` first, else the knowledge finding's own
    explanation, which states the KB value it was checked against)."""
    if not len(na):
        return
    todo = ~agents.isin([a for a, got in out.items() if len(got) >= SUGGESTIONS_MAX]).to_numpy(dtype=bool)
    if not kb:  # only knowledge findings can carry an answer then
        todo &= ((na[S.SOURCE] == "knowledge") & na[S.EXPLANATION].str.contains("知识库", regex=False)) \
            .fillna(False).to_numpy(dtype=bool)
    if not todo.any():
        return
    sub = na[todo]
    for agent, ev_, rid_, expl_, src_ in zip(agents[todo].tolist(), sub[S.EVIDENCE].tolist(), sub[S.RULE_ID].tolist(),
                                             sub[S.EXPLANATION].tolist(), sub[S.SOURCE].tolist(), strict=True):
        got = out.setdefault(agent, [])
        if len(got) >= SUGGESTIONS_MAX:
            continue
        ev, rid, expl = _s(ev_), _s(rid_), _s(expl_)
        ans = kb.get(ev) or kb.get(rid)
        if not ans and _s(src_) == "knowledge":
            ans = kb_reference(expl)
        done = seen.setdefault(agent, set())
        if ans and (ev, rid) not in done:
            done.add((ev, rid))
            got.append({"rule_id": rid, "said": ev, "explanation": expl, "answer": ans})
