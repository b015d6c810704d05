"""The streaming finding aggregates (reports.stats) against straightforward whole-frame code.

The references below are the per-frame computations the pages used before the aggregates were
streamed (one pandas frame of every finding): any chunking, tie or float-order difference shows.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_
from synthetic import bench_night

from qa_inspect import schema as S
from qa_inspect.reports import render as R
from qa_inspect.reports.data import store_finding_chunks
from qa_inspect.reports.stats import (
    ISSUES,
    FindingStats,
    ShopIssue,
    finding_stats,
    frame_chunks,
    kb_reference,
    selling_head,
)

POINTS = [0.1, 0.2, 0.67, 1.33, 2.0, 5.0, float("nan"), 0.3]  # sums of these depend on the order
REPO = Path(__file__).resolve().parents[2]
EXPLANATIONS = ["", "语气敷衍", "报价 199 元，知识库: 四件套 259 元", None, "知识库:", "推诿"]


def _s(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def random_findings(seed: int, n: int) -> pd.DataFrame:
    rnd = random.Random(seed)
    pick = rnd.choice
    rows = []
    for _ in range(n):
        conv = f"c{rnd.randrange(25)}"
        rows.append({
            S.CONVERSATION_ID: conv, S.SHOP_ID: pick(["s0", "s1", "s2", None]),
            S.AGENT_ID: pick(["a0", "a1", "a2", "a3", None]), S.MESSAGE_INDEX: pick([-1, 0, 1, 2, 3]),
            S.RULE_ID: pick(["R1", "R2", "R3", "KB-1"]), S.DIMENSION: pick(
                ["attitude", "selling", "selling", "product_knowledge", "responsiveness", None]),
            S.POLARITY: pick(["-", "-", "+", None]), S.SEVERITY: "minor", S.POINTS: pick(POINTS),
            S.EVIDENCE: pick(["ev1", "ev2", "", None]), S.EVIDENCE_START: 0, S.EVIDENCE_END: 2,
            S.EXPLANATION: pick(EXPLANATIONS), S.SOURCE: pick(["rule", "knowledge", "model", None]),
            S.CONFIDENCE: 0.9,
        })
    return S.findings_frame(rows)


# --- references: the whole-frame code -------------------------------------------------------------

def ref_rule_table(f: pd.DataFrame) -> list[dict[str, Any]]:
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in f.to_dict("records"):
        key = (_s(r[S.RULE_ID]), _s(r[S.SOURCE]), _s(r[S.DIMENSION]), _s(r[S.POLARITY]))
        g = groups.setdefault(key, {"rule_id": key[0], "source": key[1], "dimension": key[2], "polarity": key[3],
                                    "count": 0, "points": 0.0, "example": ""})
        g["count"] += 1
        p = r[S.POINTS]
        g["points"] += 0.0 if p is None or math.isnan(p) else float(p)
        if not g["example"] and _s(r[S.EXPLANATION]):
            g["example"] = _s(r[S.EXPLANATION])
    return sorted((groups[k] for k in sorted(groups)), key=lambda r: (-r["points"], -r["count"], r["rule_id"]))


def ref_selling(f: pd.DataFrame) -> list[dict[str, Any]]:
    sel = f[(f[S.POLARITY] == "+") & (f[S.DIMENSION] == "selling") & (f[S.MESSAGE_INDEX] >= 0)]
    sel = sel.assign(_p=pd.to_numeric(sel[S.POINTS], errors="coerce").fillna(0)).sort_values(
        ["_p", S.CONVERSATION_ID], ascending=[False, True], kind="stable")
    return sel.iloc[:selling_head(sel[S.AGENT_ID].tolist())].to_dict("records")


def ref_issue(neg: pd.DataFrame, key: str) -> tuple[int, int, list[dict[str, Any]]]:
    sel = neg[ISSUES[key](neg).fillna(False)]
    ex = sel.assign(_p=pd.to_numeric(sel[S.POINTS], errors="coerce").fillna(0)).sort_values(
        ["_p", S.CONVERSATION_ID], ascending=[False, True]).drop_duplicates(S.CONVERSATION_ID).head(3)
    return len(sel), int(sel[S.CONVERSATION_ID].nunique()), ex.to_dict("records")


def ref_suggestions(agent_f: pd.DataFrame, kb: dict[str, str]) -> list[dict[str, str]]:
    out, seen = [], set()
    for r in agent_f[agent_f[S.POLARITY] == "-"].to_dict("records"):
        ev, rid, expl = _s(r[S.EVIDENCE]), _s(r[S.RULE_ID]), _s(r[S.EXPLANATION])
        ans = kb.get(ev) or kb.get(rid)
        if not ans and _s(r[S.SOURCE]) == "knowledge":
            ans = kb_reference(expl)
        if ans and (ev, rid) not in seen:
            seen.add((ev, rid))
            out.append({"rule_id": rid, "said": ev, "explanation": expl, "answer": ans})
    return out[:10]


def norm(x: Any) -> Any:
    """Comparable values: NaN equal to NaN, numbers as floats (a store column may read back as
    int where the frame had float)."""
    if isinstance(x, ShopIssue):
        return norm(x.__dict__)
    if isinstance(x, dict):
        return {k: norm(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [norm(v) for v in x]
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return "<NA>"
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | float | np.integer | np.floating):
        return float(x)
    return x


def check_against_reference(f: pd.DataFrame, st: FindingStats, kb: dict[str, str]) -> None:
    assert st.rule_hits == ref_rule_table(f)  # exact floats: same additions in the same order
    neg = f[f[S.POLARITY] == "-"]
    for agent in ["a0", "a1", "a2", "a3", "zz"]:
        mine = f[f[S.AGENT_ID] == agent]
        assert st.deductions.get(agent, []) == ref_rule_table(mine[mine[S.POLARITY] == "-"]), agent
        assert st.agent_neg.get(agent, 0) == int((mine[S.POLARITY] == "-").sum())
        assert st.suggestions.get(agent, []) == ref_suggestions(mine, kb)
    assert norm([{k: v for k, v in r.items()} for r in st.selling]) == norm(ref_selling(f))
    for shop in ["s0", "s1", "s2", "s9"]:
        shop_neg = neg[neg[S.SHOP_ID] == shop]
        got = st.shop_issues(shop)
        for key in ISSUES:
            count, convs, examples = ref_issue(shop_neg, key)
            assert (got[key].count, got[key].convs) == (count, convs), (shop, key)
            assert norm([{k: v for k, v in r.items() if k != "_issue"} for r in got[key].examples]) == norm(examples)
        for agent in ["a0", "a1", "a2", "a3"]:
            assert st.shop_agent_neg.get(shop, {}).get(agent, 0) == int((shop_neg[S.AGENT_ID] == agent).sum())


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("chunk", [4, 10_000])
def test_stats_match_whole_frame_code(seed: int, chunk: int) -> None:
    f = random_findings(seed, 30 + 15 * seed)
    kb = {} if seed % 3 else {"ev1": "参考答案", "R2": "按规则答复"}
    st = finding_stats(frame_chunks(f, chunk), kb_answers=kb, coaching_candidates=["c1", "c3", "nope"])
    check_against_reference(f, st, kb)
    assert st.with_findings == frozenset({"c1", "c3"} & set(f[S.CONVERSATION_ID]))


def test_ties_keep_the_first_row_across_chunks() -> None:
    """Equal points in the same conversation: the example is the earlier row, even when a later
    chunk repeats the tie; equal totals keep row order in the selling head."""
    rows = []
    for k in range(30):
        rows.append({S.CONVERSATION_ID: f"c{k % 4}", S.SHOP_ID: "s0", S.AGENT_ID: f"a{k % 2}", S.MESSAGE_INDEX: k,
                     S.RULE_ID: "R1", S.DIMENSION: "attitude" if k % 3 else "selling", S.POLARITY: "-" if k % 3 else "+",
                     S.POINTS: 2.0, S.EXPLANATION: f"row {k}", S.SOURCE: "rule", S.EVIDENCE: f"e{k}",
                     S.SEVERITY: "minor", S.EVIDENCE_START: 0, S.EVIDENCE_END: 1, S.CONFIDENCE: 1.0})
    f = S.findings_frame(rows)
    whole = finding_stats(frame_chunks(f, 10_000))
    for chunk in (1, 4):
        assert norm(finding_stats(frame_chunks(f, chunk)).__dict__) == norm(whole.__dict__)
    check_against_reference(f, whole, {})
    assert [r[S.EXPLANATION] for r in whole.shop_issues("s0")["issue_attitude"].examples] == ["row 4", "row 1", "row 2"]


@pytest.mark.parametrize("seed", [1, 5])
def test_store_chunks_give_the_frames_stats(seed: int, tmp_path: Path) -> None:
    """The run reads the findings back from DuckDB in batches: same rows, same order, same stats."""
    f = random_findings(seed, 120)
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    con.register("other", f.assign(run_id="old"))
    con.register("mine", f.assign(run_id="r1"))
    con.execute("CREATE TABLE findings AS SELECT * FROM other")
    con.execute("INSERT INTO findings SELECT * FROM mine")
    con.execute("INSERT INTO findings SELECT * FROM other")
    got = finding_stats(store_finding_chunks(con, "r1", rows=16))
    assert sum(len(c) for c in store_finding_chunks(con, "r1", rows=16)) == len(f)
    assert norm(got.__dict__) == norm(finding_stats(frame_chunks(f)).__dict__)
    check_against_reference(f, got, {})


def test_pages_from_stats_and_cut_findings_equal_pages_from_all_findings(tmp_path: Path) -> None:
    """render_reports over every finding vs over the aggregates plus only the shown rows (the
    benchmark's synthetic night: most conversations are shown nowhere)."""
    data = bench_night(6, 3)
    full = R.render_reports(data, tmp_path / "full")
    small = R.with_stats(data)
    need = R.needed_conversations(small)
    small = replace(small, findings=small.findings[small.findings[S.CONVERSATION_ID].isin(need)])
    assert len(small.findings) < len(data.findings) / 2
    cut = R.render_reports(small, tmp_path / "cut")
    for a, b in zip(full.all_files(), cut.all_files(), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_points_are_added_in_row_order_across_chunks() -> None:
    """A rule's points are summed row by row as the pages always did: adding per-chunk subtotals
    would change the last digits (and with them a tie in the table's order)."""
    pts = [0.1, 0.2, 0.3, 0.67, 1.33, 0.1, 0.7] * 5
    rows = [{S.CONVERSATION_ID: f"c{k}", S.SHOP_ID: "s0", S.AGENT_ID: "a0", S.MESSAGE_INDEX: 0, S.RULE_ID: "R1",
             S.DIMENSION: "attitude", S.POLARITY: "-", S.SEVERITY: "minor", S.POINTS: p, S.EVIDENCE: "",
             S.EVIDENCE_START: 0, S.EVIDENCE_END: 1, S.EXPLANATION: "", S.SOURCE: "rule", S.CONFIDENCE: 1.0}
            for k, p in enumerate(pts)]
    f = S.findings_frame(rows)
    sequential = 0.0
    for p in pts:
        sequential += p
    by_chunk = 0.0
    for start in range(0, len(pts), 3):
        sub = 0.0
        for p in pts[start:start + 3]:
            sub += p
        by_chunk += sub
    assert by_chunk != sequential  # the data can tell the two apart
    st = finding_stats(frame_chunks(f, 3))
    assert st.rule_hits[0]["points"] == sequential
    assert st.deductions["a0"][0]["points"] == sequential


@settings(max_examples=300, deadline=None)
@given(st_.lists(st_.tuples(st_.sampled_from([0.0, -0.0, 1.0, 2.0, 5.0, 10.0, 10.0, 2.5]),
                            st_.sampled_from(["a", "b", "c", "d", None, float("nan")])), max_size=40),
       st_.booleans())
def test_cut_by_tie_groups_equals_the_sorted_walk(rows: list[tuple[float, Any]], distinct: bool) -> None:
    from qa_inspect.reports.stats import _cut, _cut_sorted

    p = np.array([r[0] for r in rows], dtype=np.float64)
    owners = np.array([r[1] for r in rows] + [None], dtype=object)[:len(rows)]
    assert np.array_equal(_cut(p, owners, distinct=distinct), _cut_sorted(p, owners, distinct=distinct))


def test_distinct_conversation_count_is_the_set_size() -> None:
    """Issue conversation counts are kept as deduplicated Arrow strings, not a Python set: the same
    number, also across the compaction every 50k ids and with missing ids left out."""
    import numpy as np

    from qa_inspect.reports.stats import _Distinct

    rng = np.random.default_rng(5)
    d, seen = _Distinct(), set()
    for _ in range(30):
        ids = np.array([f"c{i}" for i in rng.integers(0, 90_000, 7_000)] + [None], dtype=object)
        d.add(ids)
        seen.update(x for x in ids.tolist() if x is not None)
    assert len(d.parts) < 30  # compacted on the way
    assert d.count() == len(seen)
    assert _Distinct().count() == 0
