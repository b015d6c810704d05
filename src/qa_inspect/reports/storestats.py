"""The pages' aggregates over a run's findings, computed by DuckDB inside the store.

:func:`stats.finding_stats` streams every finding through pandas (each chunk converted, string
columns and all). Over the store the same :class:`FindingStats` comes out of a few aggregate
queries over narrow columns: DuckDB does the counting in its own bounded buffers and only the
results (a few hundred rows) and the handful of example rows reach Python. At 5M messages the
streaming pass held +150-220 MB and ~7 s of CPU for a result of 0.4 MB.

Same semantics as the streaming pass, which the tests check on stores of every shape:

- "row order" is the table's rowid order (the order a plain scan returns);
- points are summed in row order (``sum(... ORDER BY rowid)``: the same floats as adding row by
  row); missing or NaN points count as 0;
- key columns treat NULL as ""; ties go to the first row; examples sort by points descending,
  then conversation id, then row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from qa_inspect import schema as S
from qa_inspect.reports.stats import (
    ISSUE_EXAMPLES,
    RULE_KEY_NAMES,
    SUGGESTIONS_MAX,
    FindingStats,
    ShopIssue,
    selling_head,
    sort_rule_rows,
)

_P = "_p"
# points as the streaming pass reads them (to_numeric(...).fillna(0.0))
_POINTS = f"CASE WHEN {S.POINTS} IS NULL OR isnan({S.POINTS}) THEN 0.0 ELSE {S.POINTS} END"
_KEYS = ", ".join(f"coalesce({c}, '')" for c in (S.RULE_ID, S.SOURCE, S.DIMENSION, S.POLARITY))
_NEG = f"{S.POLARITY} = '-'"
# merchant issues (stats.ISSUES): the same predicates over negative findings of a shop
_ISSUES = {
    "issue_knowledge": f"(coalesce({S.SOURCE} = 'knowledge', false) OR coalesce({S.DIMENSION} = 'product_knowledge', false))",
    "issue_attitude": f"coalesce({S.DIMENSION} = 'attitude', false)",
    "issue_responsiveness": f"coalesce({S.DIMENSION} = 'responsiveness', false)",
}
_SELLING = f"{S.POLARITY} = '+' AND {S.DIMENSION} = 'selling' AND {S.MESSAGE_INDEX} >= 0"
_KB = "_qa_kb_answers"
_FIRST_SELLING = 64  # best selling rows fetched first; more until every agent's picks are in
_FIRST_EXAMPLES = 64  # rows per (issue, shop) searched for 3 example conversations at first


def _cols() -> str:
    return ", ".join(f'"{c}"' for c in S.FINDING_COLUMNS)


def _rule_rows(con: Any, run_id: str, *, per_agent: bool) -> dict[tuple[str, ...], dict[str, Any]]:
    """count, points (summed in row order) and the first non-empty explanation per rule key
    (per agent: negative findings of an agent, keyed (agent, *rule key))."""
    agent = f"{S.AGENT_ID}, " if per_agent else ""
    where = f" AND {_NEG} AND {S.AGENT_ID} IS NOT NULL" if per_agent else ""
    rows = con.execute(  # type: ignore[attr-defined]
        f"SELECT {agent}{_KEYS}, count(*), sum({_POINTS} ORDER BY rowid), "
        f"coalesce(arg_min({S.EXPLANATION}, rowid) FILTER (WHERE coalesce({S.EXPLANATION}, '') <> ''), '') "
        f"FROM findings WHERE {S.RUN_ID} = ?{where} GROUP BY ALL", [run_id]).fetchall()
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    n = 5 if per_agent else 4
    for r in rows:
        key = tuple(str(v) for v in r[:n])
        row: dict[str, Any] = dict(zip(RULE_KEY_NAMES, key[n - 4:], strict=True))
        row.update(count=int(r[n]), points=float(r[n + 1]), example=str(r[n + 2]))
        out[key] = row
    return out


def _suggestions(con: Any, run_id: str, kb: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """Per agent the first 10 negative findings (row order) that have an answer, one per
    (said, rule): the answer is the KB's for the evidence, else for the rule, else (knowledge
    findings) the KB value their explanation states after "知识库" (stats.kb_reference)."""
    ref = ("nullif(ltrim(substr(expl, strpos(expl, '知识库') + 3), ' :：'), '')")
    own = f"CASE WHEN src = 'knowledge' AND strpos(expl, '知识库') > 0 THEN {ref} END"
    only_kn = "" if kb else f" AND {S.SOURCE} = 'knowledge' AND contains({S.EXPLANATION}, '知识库')"
    base = (f"SELECT rowid AS r, {S.AGENT_ID} AS a, coalesce({S.EVIDENCE}, '') AS ev, coalesce({S.RULE_ID}, '') AS rid, "
            f"coalesce({S.EXPLANATION}, '') AS expl, coalesce({S.SOURCE}, '') AS src FROM findings "
            f"WHERE {S.RUN_ID} = ? AND {_NEG} AND {S.AGENT_ID} IS NOT NULL{only_kn}")
    if kb:
        answer = (f"coalesce(nullif(k1.answer, ''), nullif(k2.answer, ''), {own})")
        joined = (f"SELECT n.*, {answer} AS answer FROM ({base}) n LEFT JOIN {_KB} k1 ON k1.key = n.ev "
                  f"LEFT JOIN {_KB} k2 ON k2.key = n.rid")
    else:
        joined = f"SELECT n.*, {own} AS answer FROM ({base}) n"
    sql = (f"SELECT a, rid, ev, expl, answer FROM ("
           f"  SELECT * FROM ({joined}) WHERE answer IS NOT NULL"
           f"  QUALIFY row_number() OVER (PARTITION BY a, ev, rid ORDER BY r) = 1"
           f") QUALIFY row_number() OVER (PARTITION BY a ORDER BY r) <= {SUGGESTIONS_MAX} ORDER BY r")
    out: dict[str, list[dict[str, str]]] = {}
    # an agent with candidate rows but no answer has an empty list, as in the streaming pass
    for (a,) in con.execute(f"SELECT DISTINCT a FROM ({base})", [run_id]).fetchall():  # type: ignore[attr-defined]
        out[str(a)] = []
    if kb:
        frame = pd.DataFrame({"key": list(kb), "answer": [str(v) for v in kb.values()]}, dtype=object)
        con.register(_KB, frame)  # type: ignore[attr-defined]
    try:
        rows = con.execute(sql, [run_id]).fetchall()  # type: ignore[attr-defined]
    finally:
        if kb:
            con.unregister(_KB)  # type: ignore[attr-defined]
    for a, rid, ev, expl, answer in rows:
        out.setdefault(str(a), []).append({"rule_id": rid, "said": ev, "explanation": expl, "answer": answer})
    return out


def _records(con: Any, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """Finding rows as the streaming pass's records (Arrow -> pandas -> dicts)."""
    return con.sql(sql, params=params).to_arrow_table().to_pandas().to_dict("records")  # type: ignore[attr-defined]


def _selling(con: Any, run_id: str) -> list[dict[str, Any]]:
    """Positive selling findings on a message, best first (points desc, conversation, row), as
    far as any agent's picks can reach (stats.selling_head): a top-N query, doubled until the
    head ends inside what was fetched."""
    k = _FIRST_SELLING
    while True:
        rows = _records(con, f"SELECT {_cols()}, {_POINTS} AS {_P} FROM findings WHERE {S.RUN_ID} = ? AND {_SELLING} "
                             f"ORDER BY {_P} DESC, {S.CONVERSATION_ID}, rowid LIMIT {k}", [run_id])
        n = selling_head([r[S.AGENT_ID] for r in rows])
        if n < len(rows) or len(rows) < k:
            return rows[:n]
        k *= 4


def _issues(con: Any, run_id: str) -> dict[str, dict[str, ShopIssue]]:
    """Per shop and issue: negative findings, distinct conversations, and the 3 example rows (the
    best row of each of the 3 best conversations).

    The examples come from each group's first K rows in (points desc, conversation, row) order, a
    top-K aggregate of bounded memory: in that order a conversation first appears at its best
    row, so the first 3 distinct conversations are the answer. A group whose K rows hold fewer
    than 3 conversations (one conversation with dozens of equal deductions) is asked again with
    a larger K. A window over every (issue, shop, conversation) ran out of DuckDB's 128 MB at 5M
    messages with one thread."""
    parts = " UNION ALL ".join(
        f"SELECT '{key}' AS issue, {S.SHOP_ID} AS shop, {S.CONVERSATION_ID} AS c, {_POINTS} AS p, rowid AS r "
        f"FROM findings WHERE {S.RUN_ID} = $1 AND {_NEG} AND {S.SHOP_ID} IS NOT NULL AND {pred}"
        for key, pred in _ISSUES.items())
    out: dict[str, dict[str, ShopIssue]] = {}
    picked: dict[int, list[str]] = {}  # row -> issues it is an example of (a row can serve two)
    pending: set[tuple[str, str]] | None = None  # None: the first round, which also counts
    k = _FIRST_EXAMPLES
    while pending is None or pending:
        counts = ", count(*), count(DISTINCT c)" if pending is None else ""
        short: set[tuple[str, str]] = set()
        for key, shop, *got in con.execute(  # type: ignore[attr-defined]
                f"SELECT issue, shop{counts}, min_by({{'c': c, 'r': r}}, {{'np': -p, 'c': c, 'r': r}}, {k}) "
                f"FROM ({parts}) GROUP BY ALL", [run_id]).fetchall():
            group = (str(key), str(shop))
            if pending is None:
                out.setdefault(group[1], {})[group[0]] = ShopIssue(count=int(got[0]), convs=int(got[1]))
            elif group not in pending:
                continue
            firsts = _first_conversations(got[-1], k)
            if firsts is None:  # K rows, fewer than 3 conversations: ask again with a larger K
                short.add(group)
                continue
            for r in firsts:
                picked.setdefault(r, []).append(group[0])
        pending, k = short, k * 16
    if picked:
        rows = _records(con, f"SELECT rowid AS _r, {_cols()}, {_POINTS} AS {_P} FROM findings "
                             f"WHERE rowid IN (SELECT unnest(?::BIGINT[])) ORDER BY {_P} DESC, "
                             f"{S.CONVERSATION_ID}, rowid", [sorted(picked)])
        for rec in rows:
            for key in picked[int(rec.pop("_r"))]:
                out[str(rec[S.SHOP_ID])][key].examples.append(dict(rec))
    return out


def _first_conversations(top: list[dict[str, Any]], k: int) -> list[int] | None:
    """Rows of the first 3 distinct conversations of a group's top-``k`` rows (best first), or
    None when all ``k`` rows hold fewer and more rows may hold another."""
    firsts: dict[Any, int] = {}
    for row in top:
        firsts.setdefault(row["c"], int(row["r"]))
        if len(firsts) == ISSUE_EXAMPLES:
            break
    if len(firsts) < ISSUE_EXAMPLES and len(top) == k:
        return None
    return list(firsts.values())


def _shop_agent_neg(con: Any, run_id: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for shop, agent, k in con.execute(  # type: ignore[attr-defined]
            f"SELECT {S.SHOP_ID}, {S.AGENT_ID}, count(*) FROM findings WHERE {S.RUN_ID} = ? AND {_NEG} "
            f"AND {S.SHOP_ID} IS NOT NULL AND {S.AGENT_ID} IS NOT NULL GROUP BY ALL", [run_id]).fetchall():
        out.setdefault(str(shop), {})[str(agent)] = int(k)
    return out


def store_finding_stats(con: Any, run_id: str, *, coaching_candidates: Iterable[str] = (),
                        kb_answers: dict[str, str] | None = None) -> FindingStats:
    """:func:`stats.finding_stats` of the run's findings, from the store's ``findings`` table (a
    base table with ``run_id``; see ``data._findings_kind``)."""
    kb = {str(k): v for k, v in (kb_answers or {}).items() if v is not None}
    overall = _rule_rows(con, run_id, per_agent=False)
    per_agent = _rule_rows(con, run_id, per_agent=True)
    deductions: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {}
    agent_neg: dict[str, int] = {}
    for key, row in per_agent.items():
        deductions.setdefault(key[0], {})[key[1:]] = row
        agent_neg[key[0]] = agent_neg.get(key[0], 0) + row["count"]
    cands = sorted({str(c) for c in coaching_candidates})
    with_findings: set[str] = set()
    if cands:
        with_findings = {str(c) for (c,) in con.execute(  # type: ignore[attr-defined]
            f"SELECT DISTINCT {S.CONVERSATION_ID} FROM findings WHERE {S.RUN_ID} = ? "
            f"AND {S.CONVERSATION_ID} IN (SELECT unnest(?::VARCHAR[]))", [run_id, cands]).fetchall()}
    return FindingStats(
        rule_hits=sort_rule_rows(overall),
        deductions={a: sort_rule_rows(g) for a, g in deductions.items()},
        agent_neg=agent_neg, suggestions=_suggestions(con, run_id, kb),
        selling=_selling(con, run_id), issues=_issues(con, run_id),
        shop_agent_neg=_shop_agent_neg(con, run_id), with_findings=frozenset(with_findings))
