"""DuckDB store: idempotent re-runs, history across nights, atomic writes, trends and overrides."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect import store
from qa_inspect.errors import BugError


def night_frames(night: str, n: int = 4, *, agent: str = "a1", total: float = 80.0,
                 prefix: str | None = None) -> dict[str, pd.DataFrame]:
    prefix = prefix or night
    ids = [f"s:{prefix}-{i}" for i in range(n)]
    conv = pd.DataFrame({S.CONVERSATION_ID: ids, S.SHOP_ID: "s", S.PLATFORM: "jd", S.AGENT_ID: agent,
                         S.CUSTOMER_ID: [f"b{i}" for i in range(n)], S.NIGHT: night,
                         S.STARTED_AT: pd.Timestamp(f"{night} 12:00", tz="UTC"),
                         S.ENDED_AT: pd.Timestamp(f"{night} 12:10", tz="UTC"), S.N_MESSAGES: 2,
                         S.FIRST_RESPONSE_S: 5.0, **{c: 90.0 for c in S.SCORE_COLUMNS},
                         S.TOTAL: [total + i for i in range(n)], S.GRADE: "合格", S.VETO: False,
                         S.VETO_RULE: None, S.RISK: float("nan"), S.N_FINDINGS: 1, S.NA_REASONS: ""})
    msgs = pd.DataFrame([{S.PLATFORM: "jd", S.SHOP_ID: "s", S.CONVERSATION_ID: cid, S.SEQ: k,
                          S.TS: pd.Timestamp(f"{night} 12:0{k}", tz="UTC"), S.ROLE: ("customer", "agent")[k],
                          S.AGENT_ID: agent, S.CUSTOMER_ID: "b", S.TEXT: "你好", S.SKU: None,
                          S.IS_AUTO_REPLY: False, S.EVENT: None, S.AMOUNT: None, S.SOURCE_FILE: "f",
                          S.SOURCE_LINE: k + 1, S.NORM_TEXT: "你好", S.TOKENS: ["你好"]}
                         for cid in ids for k in range(2)])
    fnd = S.findings_frame([{S.CONVERSATION_ID: cid, S.SHOP_ID: "s", S.AGENT_ID: agent, S.MESSAGE_INDEX: 1,
                             S.RULE_ID: "ATT-001", S.DIMENSION: "attitude", S.POLARITY: "-", S.SEVERITY: "minor",
                             S.POINTS: 2.0, S.EVIDENCE: "你好", S.EVIDENCE_START: 0, S.EVIDENCE_END: 2,
                             S.EXPLANATION: "x", S.SOURCE: "rule", S.CONFIDENCE: 1.0} for cid in ids])
    trace = fnd[[S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.DIMENSION, S.RULE_ID, S.MESSAGE_INDEX]].assign(
        item_id="minus", points=-2.0, raw_points=-2.0, capped_by="", veto=False)
    queue = pd.DataFrame({S.CONVERSATION_ID: ids[:1], "reason": "low_total", "priority": 50.0})
    return {"conversations": conv, "messages": msgs, "findings": fnd, "trace": trace,
            "conversation_kpis": pd.DataFrame({S.CONVERSATION_ID: ids, "inquiry": True}),
            "review_queue": queue}


def write(con: duckdb.DuckDBPyConnection, run_id: str, frames: dict[str, pd.DataFrame],
          version: str = "v1") -> dict[str, int]:
    run = store.RunRecord(run_id=run_id, started_at=datetime.now(UTC), ruleset_version=version)
    return store.write_run(con, run, **frames)


@pytest.fixture()
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    c = store.connect(tmp_path / "qa.duckdb")
    yield c
    c.close()


def test_rerun_same_night_is_idempotent(con: duckdb.DuckDBPyConnection) -> None:
    frames = night_frames("2026-11-23")
    write(con, "r1", frames)
    first = store.count_rows(con)
    write(con, "r2", frames)
    second = store.count_rows(con)
    assert first["conversations"] == second["conversations"] == 4
    assert first["messages"] == second["messages"] == 8
    assert first["findings"] == second["findings"] == 4
    assert first["score_trace"] == second["score_trace"] == 4
    assert first["review_queue"] == second["review_queue"] == 1
    assert second["runs"] == 2  # both runs are recorded
    assert set(con.execute("SELECT run_id FROM conversations").df()[S.RUN_ID]) == {"r2"}


def test_new_night_adds_history_and_trend(con: duckdb.DuckDBPyConnection) -> None:
    write(con, "r1", night_frames("2026-11-23", total=70.0))
    write(con, "r2", night_frames("2026-11-24", total=80.0))
    write(con, "r3", night_frames("2026-11-24", n=2, agent="a2", total=60.0, prefix="x"))
    assert store.count_rows(con)["conversations"] == 10
    trend = store.agent_trend(con)
    t = trend.set_index([S.NIGHT, S.AGENT_ID])
    assert t.loc[("2026-11-23", "a1"), "mean_total"] == pytest.approx(71.5)  # 70..73
    assert t.loc[("2026-11-24", "a1"), "n"] == 4
    assert t.loc[("2026-11-24", "a2"), "mean_total"] == pytest.approx(60.5)
    only = store.agent_trend(con, "a2")
    assert list(only[S.AGENT_ID].unique()) == ["a2"] and len(only) == 1


def test_new_ruleset_version_keeps_old_scoring_but_reads_latest(con: duckdb.DuckDBPyConnection) -> None:
    write(con, "r1", night_frames("2026-11-23", total=70.0), version="v1")
    write(con, "r2", night_frames("2026-11-23", total=90.0), version="v2")
    assert store.count_rows(con)["conversations"] == 8
    latest = store.read_conversations(con)
    assert len(latest) == 4 and set(latest["ruleset_version"]) == {"v2"}
    assert store.agent_trend(con).iloc[0]["mean_total"] == pytest.approx(91.5)


def test_failure_mid_write_rolls_back_everything(con: duckdb.DuckDBPyConnection) -> None:
    write(con, "r1", night_frames("2026-11-23"))
    before = store.count_rows(con)
    bad = night_frames("2026-11-23")
    # findings are written after conversations and messages were already deleted and re-inserted
    bad["findings"] = bad["findings"].astype({S.POINTS: "object"})
    bad["findings"].loc[0, S.POINTS] = "not a number"
    with pytest.raises(duckdb.Error):
        write(con, "r2", bad)
    assert store.count_rows(con) == before
    assert set(con.execute("SELECT run_id FROM conversations").df()[S.RUN_ID]) == {"r1"}


def test_override_review_replaces_total(con: duckdb.DuckDBPyConnection) -> None:
    write(con, "r1", night_frames("2026-11-23", n=2, total=50.0))
    con.execute("INSERT INTO reviews (conversation_id, reviewer, total, override, imported_at) VALUES "
                "('s:2026-11-23-0', 'qa1', 95, true, now()), ('s:2026-11-23-1', 'qa1', 10, false, now())")
    conv = store.read_conversations(con).set_index(S.CONVERSATION_ID)
    assert conv.loc["s:2026-11-23-0", S.HUMAN_TOTAL] == 95 and conv.loc["s:2026-11-23-0", S.OVERRIDDEN]
    assert not conv.loc["s:2026-11-23-1", S.OVERRIDDEN]
    assert conv.loc["s:2026-11-23-1", store.EFFECTIVE_TOTAL] == 51
    assert store.agent_trend(con).iloc[0]["mean_total"] == pytest.approx((95 + 51) / 2)
    # the run reads only its own conversations' overrides, the same values as the view; a later
    # override by another reviewer wins, as in v_conversations
    con.execute("INSERT INTO reviews (conversation_id, reviewer, total, override, imported_at) VALUES "
                "('s:2026-11-23-0', 'qa2', 77, true, now() + INTERVAL 1 HOUR)")
    ids = ["s:2026-11-23-1", "s:2026-11-23-0", "nobody"]
    got = store.human_totals(con, ids)
    view = store.read_conversations(con).set_index(S.CONVERSATION_ID)[S.HUMAN_TOTAL]
    assert list(got.index) == ids and got["s:2026-11-23-0"] == view["s:2026-11-23-0"] == 77
    assert got[["s:2026-11-23-1", "nobody"]].isna().all()
    # the run passes its ids as an Arrow-backed Series (with a duplicate here): same values, same order
    as_series = store.human_totals(con, pd.Series([*ids, ids[0]], dtype="string"))
    assert list(as_series.index) == ids
    pd.testing.assert_series_equal(as_series.reset_index(drop=True), got.reset_index(drop=True))
    # the nightly run keeps only the overridden ids: the same values where there is one
    only = store.human_totals(con, pd.Series(ids, dtype="string"), every_id=False)
    assert only.to_dict() == {"s:2026-11-23-0": 77.0} and only.name == got.name


def test_outbox_table_has_the_agreed_columns(con: duckdb.DuckDBPyConnection) -> None:
    assert store.table_columns(con, "outbox") == ["run_id", "shop_id", "recipient", "subject", "status",
                                                   "attempts", "last_error", "sent_at", "message_id"]


def test_missing_store_is_a_user_error(tmp_path: Path) -> None:
    from qa_inspect.errors import UserError

    with pytest.raises(UserError, match="store not found"):
        store.connect(tmp_path / "none.duckdb", read_only=True)


@pytest.mark.parametrize("fail_at", ["deleted", "inserted:conversations", "inserted:findings", "commit"])
def test_failure_at_each_step_of_write_run_leaves_the_previous_night(con: duckdb.DuckDBPyConnection,
                                                                     fail_at: str) -> None:
    """The checkpoints the crash tests kill at: an error there must roll back to the previous run."""
    write(con, "r1", night_frames("2026-11-23", total=70.0))
    before = store.count_rows(con)

    def boom(step: str) -> None:
        if step == fail_at:
            raise RuntimeError(step)

    run = store.RunRecord(run_id="r2", started_at=datetime.now(UTC), ruleset_version="v1")
    with pytest.raises(RuntimeError, match=fail_at):
        store.write_run(con, run, **night_frames("2026-11-23", total=90.0), checkpoint=boom)
    assert store.count_rows(con) == before
    assert set(store.read_conversations(con)[S.RUN_ID]) == {"r1"}


def test_run_status_is_stored_until_marked_ok(con: duckdb.DuckDBPyConnection) -> None:
    run = store.RunRecord(run_id="r1", started_at=datetime.now(UTC), ruleset_version="v1", status="stored")
    store.write_run(con, run, **night_frames("2026-11-23"))
    assert con.execute("SELECT status FROM runs").fetchall() == [("stored",)]
    store.set_run_status(con, "r1", "ok")
    assert con.execute("SELECT status FROM runs").fetchall() == [("ok",)]


def test_a_file_that_is_not_a_store_is_a_user_error(tmp_path: Path) -> None:
    from qa_inspect.errors import UserError

    bad = tmp_path / "qa.duckdb"
    bad.write_bytes(b"this is not a duckdb file" * 100)
    with pytest.raises(UserError, match="qa.duckdb"):
        store.connect(bad)


def test_a_night_too_big_for_the_memory_cap_is_written_again_with_more(con: duckdb.DuckDBPyConnection,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB cannot spill the primary-key index: a night that does not fit the connection's cap
    fails at COMMIT. The failed transaction is rolled back and the run written again, whole, with a
    larger cap; anything but running out of memory is raised as before."""
    real = store.write_run_once
    calls: list[str] = []

    def starved(*args: object, **kwargs: object) -> dict[str, int]:
        calls.append(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
        if len(calls) == 1:
            con.execute("BEGIN TRANSACTION")
            con.execute("INSERT INTO runs (run_id) VALUES ('half-written')")
            raise duckdb.TransactionException("Failed to commit: could not allocate block of size 256.0 KiB")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "write_run_once", starved)
    write(con, "r1", night_frames("2026-11-23", n=3, total=70.0))
    assert len(calls) == 2 and calls[1] != calls[0]  # the second attempt ran with a larger cap
    assert con.execute("SELECT count(*) FROM runs WHERE run_id = 'half-written'").fetchone()[0] == 0
    assert store.count_rows(con)["conversations"] == 3

    def broken(*args: object, **kwargs: object) -> dict[str, int]:
        raise duckdb.ConstraintException("not a memory problem")

    monkeypatch.setattr(store, "write_run_once", broken)
    with pytest.raises(duckdb.ConstraintException):
        write(con, "r2", night_frames("2026-11-24", n=1, total=70.0))


def test_kpis_joined_in_the_store_equal_the_merged_frame(tmp_path: Path) -> None:
    """write_run(attribution=...) stores conversation_kpis joined by DuckDB; the rows must be those of
    the pandas left merge the run used to build (a conversation without attribution gets NULLs)."""
    frames = night_frames("2026-11-23", n=5)
    ids = frames["conversations"][S.CONVERSATION_ID].tolist()
    stats = pd.DataFrame({S.CONVERSATION_ID: ids, S.SHOP_ID: "s", S.AGENT_ID: "a1", "inquiry": [True, False] * 2 + [True],
                          "n_messages": [2, 3, 4, 5, 6], "response_s_sum": [1.5, 0.0, 2.25, 9.0, 3.0]})
    att = pd.DataFrame({S.CONVERSATION_ID: ids[1:][::-1], "converted_inquiries": [True, False, True, False],
                        "sales_amount": [10.0, 0.0, 99.5, 0.0]})
    stats.loc[3, "response_s_sum"] = np.nan  # NULL in the store whichever way the rows go in
    stats[S.AGENT_ID] = stats[S.AGENT_ID].astype("string")
    stats.loc[4, S.AGENT_ID] = pd.NA
    # the nightly run hands its stats over as pickled partition frames (written to Parquet for DuckDB)
    spool = tmp_path / "spool"
    spool.mkdir()
    files = []
    for i, part in enumerate((stats.iloc[:3], stats.iloc[3:])):
        files.append(spool / f"part-{i}.pkl")
        files[-1].write_bytes(pickle.dumps(part.reset_index(drop=True)))
    tables = []
    for name, kw in (("joined", {"conversation_kpis": stats, "attribution": att}),
                     ("merged", {"conversation_kpis": stats.merge(att, on=S.CONVERSATION_ID, how="left")}),
                     ("parts", {"conversation_kpis": store.FrameParts(tuple(files)), "attribution": att})):
        c = store.connect(tmp_path / f"{name}.duckdb")
        run = store.RunRecord(run_id="r1", started_at=datetime.now(UTC), ruleset_version="v1")
        store.write_run(c, run, **{**frames, **kw})
        tables.append(c.execute("SELECT * FROM conversation_kpis ORDER BY conversation_id").fetchdf())
        c.close()
    pd.testing.assert_frame_equal(tables[0], tables[1])
    pd.testing.assert_frame_equal(tables[2], tables[1])
    assert sorted(x.name for x in spool.iterdir()) == ["part-0.pkl", "part-1.pkl"]  # the Parquet copies are gone
    assert tables[0]["response_s_sum"].isna().sum() == 1
    first = tables[0].set_index(S.CONVERSATION_ID).loc[ids[0]]
    assert pd.isna(first["converted_inquiries"]) and pd.isna(first["sales_amount"])
    assert tables[0]["sales_amount"].sum() == 109.5


def test_conversations_from_spooled_parts_equal_the_frame(tmp_path: Path) -> None:
    """The nightly run hands the store its conversations as pickled partition frames (not in memory
    during the write): the stored rows equal writing the whole frame, and parts without the run's ids
    are refused."""
    import pickle

    from qa_inspect.errors import BugError

    frames = night_frames("2026-11-23", n=5)
    conv = frames["conversations"]
    files = []
    for i, part in enumerate((conv.iloc[:2], conv.iloc[2:2], conv.iloc[2:])):
        files.append(tmp_path / f"part-{i}.pkl")
        files[-1].write_bytes(pickle.dumps(part))
    parts = store.FrameParts(tuple(files))
    assert [len(f) for f in parts.frames(min_rows=2)] == [2, 3]  # the empty part joins the next batch
    assert [len(f) for f in parts.frames()] == [5]
    pd.testing.assert_frame_equal(pd.concat(list(parts.frames(min_rows=1)), ignore_index=True), conv)
    tables = []
    for name, kw in (("parts", {"conversations": store.FrameParts(tuple(files)),
                                "conversation_ids": conv[S.CONVERSATION_ID]}),
                     ("frame", {})):
        c = store.connect(tmp_path / f"{name}.duckdb")
        run = store.RunRecord(run_id="r1", started_at=datetime.now(UTC), ruleset_version="v1",
                              finished_at=datetime(2026, 11, 24, tzinfo=UTC))
        counts = store.write_run(c, run, **{**frames, **kw})
        assert counts["conversations"] == 5
        tables.append(c.execute("SELECT * FROM conversations ORDER BY conversation_id").fetchdf())
        c.close()
    pd.testing.assert_frame_equal(tables[0], tables[1])
    c = store.connect(tmp_path / "bad.duckdb")
    run = store.RunRecord(run_id="r1", started_at=datetime.now(UTC), ruleset_version="v1")
    with pytest.raises(BugError, match="conversation_ids"):
        store.write_run(c, run, **{**frames, "conversations": store.FrameParts(tuple(files))})
    with pytest.raises(BugError, match="4 ids"):  # parts that do not hold the run's conversations
        store.write_run(c, run, **{**frames, "conversations": store.FrameParts(tuple(files)),
                                   "conversation_ids": conv[S.CONVERSATION_ID].iloc[:4]})
    c.close()


def test_write_run_uses_one_thread_and_restores_the_setting(con: duckdb.DuckDBPyConnection) -> None:
    """The write runs single-threaded (cheaper inserts) but must not leave the connection so: the
    reports read the same store afterwards."""
    con.execute("SET threads = 3")
    seen: list[int] = []
    run = store.RunRecord(run_id="r2", started_at=datetime.now(UTC), ruleset_version="v1")
    store.write_run(con, run, **night_frames("2026-11-24"),
                    checkpoint=lambda _s: seen.append(int(con.execute("SELECT current_setting('threads')").fetchone()[0])))
    assert seen and set(seen) == {1}
    assert int(con.execute("SELECT current_setting('threads')").fetchone()[0]) == 3


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[object, ...]]]:
    skip = {"scored_at", "started_at", "finished_at"}
    out = {}
    for t in ("conversations", "messages", "findings", "score_trace", "conversation_kpis", "review_queue", "runs"):
        cols = [c for c in store.table_columns(con, t) if c not in skip]
        out[t] = con.execute(f"SELECT {', '.join(cols)} FROM {t} ORDER BY ALL").fetchall()
    return out


def _halves(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = df[S.CONVERSATION_ID].isin(sorted(set(df[S.CONVERSATION_ID]))[:2])
    return df[cut], df[~cut]


def _streamed(con: duckdb.DuckDBPyConnection, run_id: str, frames: dict[str, pd.DataFrame],
              checkpoint: store.Checkpoint | None = None) -> dict[str, int]:
    run = store.RunRecord(run_id=run_id, started_at=datetime.now(UTC), ruleset_version="v1")
    w = store.RunWriter(con, run)
    for part in zip(*(_halves(frames[k]) for k in ("messages", "findings", "trace")), strict=True):
        w.add(*part)
    return w.finish(conversations=frames["conversations"], conversation_kpis=frames["conversation_kpis"],
                    review_queue=frames["review_queue"], checkpoint=checkpoint)


def test_run_writer_stores_what_write_run_stores(tmp_path: Path) -> None:
    """Rows added part by part during the scoring, then finished: the same store as one write_run,
    including the replacement of an earlier scoring of the same night."""
    a, b = store.connect(tmp_path / "a.duckdb"), store.connect(tmp_path / "b.duckdb")
    try:
        for c in (a, b):
            write(c, "r1", night_frames("2026-11-23", total=70.0))
        counts_a = write(a, "r2", night_frames("2026-11-23", total=90.0))
        counts_b = _streamed(b, "r2", night_frames("2026-11-23", total=90.0))
        assert counts_a == counts_b
        assert _tables(a) == _tables(b)
        assert set(store.read_conversations(b)[S.RUN_ID]) == {"r2"}
        assert int(b.execute("SELECT count(*) FROM messages").fetchone()[0]) == counts_b["messages"]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("fail_at", ["deleted", "inserted:conversations", "commit"])
def test_run_writer_failure_or_abort_leaves_the_previous_night(con: duckdb.DuckDBPyConnection, fail_at: str) -> None:
    write(con, "r1", night_frames("2026-11-23", total=70.0))
    before = _tables(con)

    def boom(step: str) -> None:
        if step == fail_at:
            raise RuntimeError(step)

    with pytest.raises(RuntimeError, match=fail_at):
        _streamed(con, "r2", night_frames("2026-11-23", total=90.0), checkpoint=boom)
    assert _tables(con) == before
    run = store.RunRecord(run_id="r3", started_at=datetime.now(UTC), ruleset_version="v1")
    w = store.RunWriter(con, run)
    w.add(*(night_frames("2026-11-23")[k] for k in ("messages", "findings", "trace")))
    w.abort()
    w.abort()
    assert _tables(con) == before
    with pytest.raises(BugError, match="already in the store"):
        store.RunWriter(con, store.RunRecord(run_id="r1", started_at=datetime.now(UTC), ruleset_version="v1"))


def test_a_failed_insert_in_a_transaction_raises_its_own_error(con: duckdb.DuckDBPyConnection) -> None:
    """The failed statement aborts the transaction, and DuckDB then refuses to unregister the
    frame's view as well: the caller (write_run's out-of-memory retry) must see the first error."""
    con.execute("CREATE TABLE uniq (k INTEGER PRIMARY KEY)")
    con.execute("INSERT INTO uniq VALUES (1)")
    with pytest.raises(duckdb.ConstraintException):
        with store.transaction(con):
            store.insert_frame(con, "uniq", pd.DataFrame({"k": [1]}))
    with pytest.raises(duckdb.ConstraintException):
        with store.transaction(con):
            store.insert_joined(con, "uniq", pd.DataFrame({"k": [1]}), pd.DataFrame({"k": [1], "x": [2]}), "k")
    assert con.execute("SELECT count(*) FROM uniq").fetchone()[0] == 1
    store.insert_frame(con, "uniq", pd.DataFrame({"k": [2]}))  # the views are gone: the names are free again
    assert con.execute("SELECT count(*) FROM uniq").fetchone()[0] == 2
