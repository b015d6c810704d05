"""The nightly ``run`` end to end through the CLI on sample_logs/, plus partition independence,
the run lock and the selection/calibration commands on the store it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from qa_inspect import schema as S
from qa_inspect import store
from qa_inspect.cli import app
from qa_inspect.errors import BugError, LockError
from qa_inspect.pipeline import LOCK_FILE, run_lock, stage


@pytest.fixture(scope="module")
def run_dir(night1: list[Path], frozen_rules: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    res = CliRunner().invoke(app, ["run", *map(str, night1), "--out", str(out), "-q", "--rules", str(frozen_rules)])
    assert res.exit_code == 0, res.output
    assert "conversations" in res.output
    assert "stage seconds [local, 1 partitions]: config " in res.output  # the per-stage line, even with -q
    return out


def test_run_writes_outputs_and_store(run_dir: Path, night1: list[Path]) -> None:
    for name in ("conversations", "findings", "agents", "review_queue"):
        assert (run_dir / f"{name}.csv").read_bytes().startswith(b"\xef\xbb\xbf")
        assert (run_dir / f"{name}.parquet").exists()
    assert (run_dir / "messages.parquet").exists() and (run_dir / "rejects.csv").exists()
    assert not (run_dir / LOCK_FILE).exists()
    conv = pd.read_csv(run_dir / "conversations.csv", encoding="utf-8-sig")
    assert list(conv.columns[: len(S.CONVERSATION_COLUMNS)]) == list(S.CONVERSATION_COLUMNS)
    msgs = pd.read_parquet(run_dir / "messages.parquet")
    assert len(conv) == msgs[S.CONVERSATION_ID].nunique()  # every conversation scored, none dropped
    assert set(conv[S.SHOP_ID]) == {"tmall_yuejia", "jd_jike", "tw_meiyan"}
    assert set(conv[S.NIGHT].dropna()) == {"2026-11-23"}
    rejects = pd.read_csv(run_dir / "rejects.csv", encoding="utf-8-sig")
    assert len(rejects) > 0 and {"file", "line", "field", "reason"} <= set(rejects.columns)
    # the totals in the file are explained by the trace
    trace = pd.read_parquet(run_dir / "score_trace.parquet")
    sums = trace.groupby([S.CONVERSATION_ID, S.DIMENSION])[S.POINTS].sum()
    c = conv.set_index(S.CONVERSATION_ID)
    for (cid, dim), pts in sums.items():
        base = {"selling": 80.0}.get(dim, 100.0)  # bundled scorecard bases
        assert c.loc[cid, S.score_column(dim)] == pytest.approx(base + pts)
    summary = json.loads((run_dir / "run_summary.json").read_text(encoding="utf-8"))
    with store.open_store(run_dir / "qa.duckdb", read_only=True) as con:
        counts = store.count_rows(con)
    assert counts["conversations"] == len(conv) == summary["conversations"]
    assert summary["files"] == len(night1) and summary["seconds"] > 0
    assert {"ingest", "rules", "store", "outputs", "reports"} <= set(summary["stage_seconds"])
    assert counts["messages"] == len(msgs)
    agents = pd.read_csv(run_dir / "agents.csv", encoding="utf-8-sig")
    assert agents["conversations"].sum() == len(conv)


def test_rerun_same_night_does_not_double_count(run_dir: Path, night1: list[Path], frozen_rules: Path) -> None:
    with store.open_store(run_dir / "qa.duckdb", read_only=True) as con:
        before = store.count_rows(con)
    res = CliRunner().invoke(app, ["run", *map(str, night1), "--out", str(run_dir), "-q", "--no-reports",
                                   "--rules", str(frozen_rules)])
    assert res.exit_code == 0, res.output
    with store.open_store(run_dir / "qa.duckdb", read_only=True) as con:
        after = store.count_rows(con)
    for table in ("conversations", "messages", "findings", "score_trace", "conversation_kpis"):
        assert after[table] == before[table], table
    assert after["runs"] == before["runs"] + 1


def test_sample_coach_review_calibrate_commands(run_dir: Path, frozen_rules: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r1 = runner.invoke(app, ["sample", "--per-agent", "2", "--seed", "5", "--out", str(run_dir)])
    assert r1.exit_code == 0, r1.output
    first = (run_dir / "sample.csv").read_bytes()
    r2 = runner.invoke(app, ["sample", "--per-agent", "2", "--seed", "5", "--out", str(run_dir)])
    assert r2.exit_code == 0 and (run_dir / "sample.csv").read_bytes() == first
    conv = pd.read_csv(run_dir / "conversations.csv", encoding="utf-8-sig")
    agent = conv[S.AGENT_ID].value_counts().index[0]
    rc = runner.invoke(app, ["coach", "--agent", agent, "-n", "3", "--db", str(run_dir / "qa.duckdb")])
    assert rc.exit_code == 0, rc.output
    bad = runner.invoke(app, ["coach", "--agent", "nobody", "--db", str(run_dir / "qa.duckdb")])
    assert bad.exit_code == 2 and "nobody" in bad.output
    picked = conv.head(6)
    reviews = pd.DataFrame({"conversation_id": picked[S.CONVERSATION_ID], "reviewer": "qa1",
                            "total": (picked[S.TOTAL].fillna(80) - 5).clip(0, 100).round(1),
                            "override": [True] + [False] * 5})
    path = tmp_path / "reviews.csv"
    reviews.to_csv(path, index=False, encoding="utf-8-sig")
    ri = runner.invoke(app, ["review", "import", str(path), "--out", str(run_dir)])
    assert ri.exit_code == 0 and "imported 6 reviews (1 overrides)" in ri.output
    cal = runner.invoke(app, ["calibrate", "--out", str(run_dir), "--rules", str(frozen_rules)])
    assert cal.exit_code == 0, cal.output
    agree = pd.read_csv(run_dir / "calibration_agreement.csv", encoding="utf-8-sig").set_index("measure")
    assert agree.loc["total", "mae"] == pytest.approx(5.0, abs=0.06)  # every review is 5 points lower
    missing = runner.invoke(app, ["sample", "--db", str(tmp_path / "none.duckdb")])
    assert missing.exit_code == 1


@pytest.mark.slow
def test_partitions_and_pool_give_the_same_scores_as_one_batch(night1: list[Path], frozen_rules: Path,
                                                                tmp_path: Path) -> None:
    from collections import Counter

    from qa_inspect.ingest import ingest_paths
    from qa_inspect.pipeline import (
        load_context,
        prepare_partition,
        process_partition,
        run_audit,
        split_partitions,
    )

    rules_dir = frozen_rules
    ctx = load_context(rules_dir)
    msgs = ingest_paths([night1[2]], rules_dir=rules_dir).messages
    whole_p, whole_counts = prepare_partition(msgs, ctx)
    whole = process_partition(whole_p, ctx, whole_counts).conversations
    parts = split_partitions(msgs, 7)
    assert len(parts) > 1
    prepared = [prepare_partition(p, ctx) for p in parts]
    counts: Counter[str] = Counter()
    for _, c in prepared:
        counts.update(c)
    assert counts == whole_counts
    split = pd.concat([process_partition(p, ctx, counts).conversations for p, _ in prepared])
    cols = [S.CONVERSATION_ID, *S.SCORE_COLUMNS, S.TOTAL, S.GRADE, S.N_FINDINGS]
    expected = whole[cols].sort_values(S.CONVERSATION_ID).reset_index(drop=True)
    pd.testing.assert_frame_equal(expected, split[cols].sort_values(S.CONVERSATION_ID).reset_index(drop=True))
    # the process pool (workers load their own context) gives the same scores
    out = tmp_path / "pool"
    summary = run_audit([night1[2]], out, rules_dir=rules_dir, workers=2, partition_size=7, render=False)
    assert summary.conversations == len(whole)
    pooled = pd.read_parquet(out / "conversations.parquet")[cols]
    pooled = pooled.sort_values(S.CONVERSATION_ID).reset_index(drop=True)
    pd.testing.assert_frame_equal(expected, pooled, check_dtype=False)


def test_lock_blocks_live_run_and_takes_over_stale(tmp_path: Path) -> None:
    import socket

    lock = tmp_path / LOCK_FILE
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    with pytest.raises(LockError, match="locked"), run_lock(tmp_path):
        pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}), encoding="utf-8")
    with run_lock(tmp_path):
        assert json.loads(lock.read_text(encoding="utf-8"))["pid"] == os.getpid()
    assert not lock.exists()


def test_locked_folder_exits_1_and_missing_stage_is_a_bug(tmp_path: Path, night1: list[Path]) -> None:
    import socket

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}),
                                      encoding="utf-8")
    res = CliRunner().invoke(app, ["run", str(night1[0]), "--out", str(tmp_path), "-q"])
    assert res.exit_code == 1 and "locked" in res.output
    with pytest.raises(BugError, match="not available"):
        stage("qa_inspect.no_such_stage", "run")
    with pytest.raises(BugError, match="has no 'nope'"):
        stage("qa_inspect.kpis", "nope")


def test_overrides_replace_total_and_grade_in_outputs(rules_dir: Path) -> None:
    from qa_inspect.pipeline import AUTO_TOTAL, apply_overrides
    from qa_inspect.scoring import load_scorecard

    conv = pd.DataFrame({S.CONVERSATION_ID: ["a", "b"], S.TOTAL: [95.0, 50.0], S.GRADE: ["优秀", "不合格"]})
    out = apply_overrides(conv, pd.Series({"a": 70.0}), load_scorecard(rules_dir)).set_index(S.CONVERSATION_ID)
    assert out.loc["a", S.TOTAL] == 70 and out.loc["a", S.GRADE] == "待改进" and out.loc["a", S.OVERRIDDEN]
    assert out.loc["a", AUTO_TOTAL] == 95
    assert out.loc["b", S.TOTAL] == 50 and not out.loc["b", S.OVERRIDDEN] and pd.isna(out.loc["b", S.HUMAN_TOTAL])


def test_lock_is_held_by_the_open_file_not_only_by_its_contents(tmp_path: Path) -> None:
    """Rewriting the lock file's JSON (e.g. someone "fixing" it) does not let a second run in while the
    first holds it; after release the file is gone and the next run takes it without a takeover log."""
    logs: list[str] = []
    with run_lock(tmp_path, logs.append) as path:
        path.write_text(json.dumps({"pid": 999999999, "host": "x"}), encoding="utf-8")
        with pytest.raises(LockError, match="locked by another qa-inspect run"), run_lock(tmp_path):
            pass
    assert not (tmp_path / LOCK_FILE).exists()
    with run_lock(tmp_path, logs.append):
        pass
    assert logs == []
