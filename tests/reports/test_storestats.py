"""The aggregates computed inside DuckDB (reports.storestats) against the streaming pass over the
same rows (reports.stats, itself checked against whole-frame code in test_stats.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from test_stats import check_against_reference, norm, random_findings

from qa_inspect import schema as S
from qa_inspect.reports import data as D
from qa_inspect.reports import storestats as SS
from qa_inspect.reports.stats import finding_stats, frame_chunks

KB = {"ev1": "参考答案", "R2": "按规则答复", "ev2": ""}


def _store(f: pd.DataFrame, path: Path) -> duckdb.DuckDBPyConnection:
    """``f`` as run r1 of a findings table, between rows of another run (rowids are not 0..n-1)."""
    con = duckdb.connect(str(path))
    con.register("other", f.assign(run_id="old"))
    con.register("mine", f.assign(run_id="r1"))
    con.execute("CREATE TABLE findings AS SELECT * FROM other")
    con.execute("INSERT INTO findings SELECT * FROM mine")
    con.execute("INSERT INTO findings SELECT * FROM other")
    con.unregister("other")
    con.unregister("mine")
    return con


def _same(f: pd.DataFrame, con: duckdb.DuckDBPyConnection, kb: dict[str, str], cands: list[str]) -> None:
    got = SS.store_finding_stats(con, "r1", coaching_candidates=cands, kb_answers=kb)
    want = finding_stats(frame_chunks(f, 7), coaching_candidates=cands, kb_answers=kb)
    assert norm(got.__dict__) == norm(want.__dict__)
    check_against_reference(f, got, {k: v for k, v in kb.items()})


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("first", [1, 64])
def test_store_stats_equal_the_streaming_pass(seed: int, first: int, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Random findings (NULL and empty keys, NaN points, sums that depend on the order, ties); with
    ``first`` 1 every top-K query has to be asked again with a larger K."""
    monkeypatch.setattr(SS, "_FIRST_EXAMPLES", first)
    monkeypatch.setattr(SS, "_FIRST_SELLING", first)
    f = random_findings(seed, 40 + 20 * seed)
    con = _store(f, tmp_path / "s.duckdb")
    _same(f, con, {} if seed % 2 else KB, ["c1", "c3", "nope"])


def _row(k: int, conv: str, agent: str, points: float, **kw: Any) -> dict[str, Any]:
    row = {S.CONVERSATION_ID: conv, S.SHOP_ID: "s0", S.AGENT_ID: agent, S.MESSAGE_INDEX: k % 5, S.RULE_ID: "R1",
           S.DIMENSION: "attitude", S.POLARITY: "-", S.SEVERITY: "minor", S.POINTS: points, S.EVIDENCE: f"e{k}",
           S.EVIDENCE_START: 0, S.EVIDENCE_END: 1, S.EXPLANATION: f"row {k}", S.SOURCE: "rule", S.CONFIDENCE: 1.0}
    row.update(kw)
    return row


def test_one_conversation_full_of_equal_deductions(tmp_path: Path) -> None:
    """The examples' top-K rows all belong to one conversation: K grows until 3 conversations are
    in; the selling head is 100 rows of one agent before the others appear."""
    rows = [_row(k, "c9", "a0", 5.0) for k in range(100)]
    rows += [_row(100, "c2", "a1", 5.0), _row(101, "c1", "a1", 2.0), _row(102, "c0", "a2", 1.0)]
    rows += [_row(200 + k, "c9", "a0", 3.0, **{S.POLARITY: "+", S.DIMENSION: "selling"}) for k in range(100)]
    rows += [_row(300 + k, f"c{k}", f"a{k % 3 + 1}", 1.0, **{S.POLARITY: "+", S.DIMENSION: "selling"})
             for k in range(6)]
    f = S.findings_frame(rows)
    con = _store(f, tmp_path / "s.duckdb")
    got = SS.store_finding_stats(con, "r1")
    assert [r[S.CONVERSATION_ID] for r in got.shop_issues("s0")["issue_attitude"].examples] == ["c2", "c9", "c1"]
    assert [r[S.EXPLANATION] for r in got.shop_issues("s0")["issue_attitude"].examples] == ["row 100", "row 0",
                                                                                            "row 101"]
    assert len(got.selling) == 103  # 100 of a0, then 3 of the others
    _same(f, con, {}, [])


def test_a_row_can_be_an_example_of_two_issues(tmp_path: Path) -> None:
    """A knowledge finding filed under attitude is a knowledge and an attitude issue."""
    f = S.findings_frame([_row(0, "c0", "a0", 2.0, **{S.SOURCE: "knowledge"}), _row(1, "c1", "a0", 1.0)])
    con = _store(f, tmp_path / "s.duckdb")
    got = SS.store_finding_stats(con, "r1").shop_issues("s0")
    assert [r[S.CONVERSATION_ID] for r in got["issue_knowledge"].examples] == ["c0"]
    assert [r[S.CONVERSATION_ID] for r in got["issue_attitude"].examples] == ["c0", "c1"]
    _same(f, con, {}, [])


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory, night1: list[Path]) -> tuple[Path, str]:
    from qa_inspect.pipeline import run_audit

    out = tmp_path_factory.mktemp("run")
    summary = run_audit(night1, out, render=False)
    return out / "qa.duckdb", summary.run_id


def test_a_runs_store_gives_the_streaming_stats(sample_store: tuple[Path, str]) -> None:
    """The pipeline's own store (its column types, its insertion order), with KB answers."""
    db, run_id = sample_store
    con = duckdb.connect(str(db), read_only=True)
    try:
        evidence = [r[0] for r in con.execute("SELECT DISTINCT evidence FROM findings WHERE evidence <> '' "
                                              "ORDER BY 1 LIMIT 5").fetchall()]
        convs = [r[0] for r in con.execute("SELECT conversation_id FROM conversations ORDER BY 1 LIMIT 9").fetchall()]
        for kb in ({}, {e: f"答案{k}" for k, e in enumerate(evidence)}):
            got = SS.store_finding_stats(con, run_id, coaching_candidates=convs, kb_answers=kb)
            want = finding_stats(D.store_finding_chunks(con, run_id), coaching_candidates=convs, kb_answers=kb)
            assert norm(got.__dict__) == norm(want.__dict__)
            assert got.rule_hits and got.issues and got.selling and got.with_findings
    finally:
        con.close()


def test_out_of_memory_falls_back_to_the_streaming_pass(sample_store: tuple[Path, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB's memory cap can stop the aggregate queries: the reports still get the same stats."""
    db, run_id = sample_store
    con = duckdb.connect(str(db), read_only=True)
    try:
        base = D.ReportData(run_id=run_id, generated_at=pd.Timestamp("2026-11-27").to_pydatetime(),
                            conversations=D._table(con, "conversations", run_id), messages=S.empty_messages(),
                            findings=S.empty_findings(), agent_kpis=D._empty(D.AGENT_KPI_COLUMNS),
                            shop_kpis=D._empty(D.SHOP_KPI_COLUMNS), trend=D._empty(D.TREND_COLUMNS),
                            review_queue=D._empty(D.REVIEW_COLUMNS), shops={})
        normal = D.with_store_findings(con, base)

        def oom(*_a: Any, **_k: Any) -> None:
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")

        monkeypatch.setattr(SS, "store_finding_stats", oom)
        fallback = D.with_store_findings(con, base)
        assert norm(fallback.stats.__dict__) == norm(normal.stats.__dict__)
        assert normal.stats.rule_hits
        pd.testing.assert_frame_equal(fallback.findings, normal.findings)
        pd.testing.assert_frame_equal(fallback.messages, normal.messages)
    finally:
        con.close()
