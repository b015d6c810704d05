"""Crash-safe reruns, the run lock between real processes, and formula-safe CSV outputs.

``qa-inspect run`` is started as a subprocess on one shop's night and SIGKILLed at every stage
boundary (pipeline.crash_point via QA_INSPECT_CRASH_AT) and at seeded random times. The kills are
chained in ONE output folder in pipeline order, so every run starts from the wreck the previous one
left and has to get past the point where that one died; after each kill the visible state must be
either the previous complete state or nothing (store rows, output files), and the final rerun must
match a clean run exactly.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect.pipeline import CRASH_ENV, LOCK_FILE, OUTPUT_FILES, run_audit

NIGHT = "tw_meiyan_2026-11-23.jsonl"
CLI = [sys.executable, "-c", "from qa_inspect.cli import main; main()"]
FRAMES = ("conversations", "findings", "score_trace", "review_queue", "agents", "shops")

# a kill at every stage boundary, in the order a run reaches them (inside the store transaction,
# between output files, between a temp file and its rename, during the reports swap)
KILL_POINTS = (
    "locked", "partition:1", "store:commit", "store:committed",
    "output:conversations.csv", "before_rename:findings.parquet", "reports:rendered", "reports:swapping", "summary",
)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".reports-"))


@pytest.fixture(scope="module")
def night(sample_logs_dir: Path) -> Path:
    path = sample_logs_dir / NIGHT
    if not path.exists():
        pytest.skip("sample_logs/ not generated yet")
    return path




def run_cli(night: Path, out: Path, rules: Path, *, crash: str | None = None, reports: bool = True,
            extra: tuple[str, ...] = (), capture: bool = True) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash:
        env[CRASH_ENV] = crash
    args = [*CLI, "run", str(night), "--out", str(out), "--rules", str(rules), "-q", *extra]
    if not reports:
        args.append("--no-reports")
    pipe = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(args, env=env, stdout=pipe, stderr=pipe, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def store_counts(db: Path) -> dict[str, pd.Series]:
    """Rows per conversation id in the tables a rerun replaces."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT conversation_id, count(*) AS n FROM {t} GROUP BY 1").df()
                .set_index("conversation_id")["n"].sort_index()
                for t in ("conversations", "findings", "messages", "score_trace")}
    finally:
        con.close()


@pytest.fixture(scope="module")
def clean(night: Path, frozen_rules: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    code, text = finish(run_cli(night, out, frozen_rules, reports=False))
    assert code == 0, text
    return out


def assert_visible_state_is_whole(out: Path, clean: Path, clean_counts: dict[str, pd.Series]) -> None:
    """What a reader sees after a kill: complete files equal to a clean run's, and a store holding
    every conversation of the night exactly once or not at all (never a half-written night)."""
    for name in OUTPUT_FILES:
        f = out / name
        if not f.exists() or name == "run_summary.json":
            continue
        if name.endswith(".csv"):  # no run id or timestamp inside: a complete file is byte-identical
            assert f.read_bytes() == (clean / name).read_bytes(), name
        else:
            pd.testing.assert_frame_equal(pd.read_parquet(f), pd.read_parquet(clean / name), obj=name)
    if (out / "run_summary.json").exists():
        json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    if (out / "reports").exists():
        assert (out / "reports" / "index.html").exists() and (out / "reports" / "coaching.html").exists()
    if (out / "qa.duckdb").exists():
        got = store_counts(out / "qa.duckdb")
        if len(got["conversations"]):
            for table, expected in clean_counts.items():
                pd.testing.assert_series_equal(got[table], expected, obj=table)
        else:
            assert all(len(s) == 0 for s in got.values())


def test_killed_runs_leave_whole_state_and_rerun_matches_clean(night: Path, frozen_rules: Path, clean: Path,
                                                               tmp_path: Path) -> None:
    clean_counts = store_counts(clean / "qa.duckdb")
    assert (clean_counts["conversations"] == 1).all() and clean_counts["findings"].sum() > 0
    out = tmp_path / "out"
    kills = 0
    left: list[str] = []
    for point in KILL_POINTS:
        code, text = finish(run_cli(night, out, frozen_rules, crash=point,
                                    reports=point.startswith(("reports", "summary"))))
        assert code == -signal.SIGKILL, f"{point}: not killed (exit {code}): {text}"
        kills += 1
        assert_visible_state_is_whole(out, clean, clean_counts)
        assert (out / LOCK_FILE).exists()  # a killed run's lock stays behind: the next run takes it over
        now = leftovers(out)
        assert not set(left) & set(now), f"{point}: the previous run's temp files were not cleaned: {now}"
        if point.startswith(("before_rename", "reports:")):
            assert now, f"{point} should have left a temp file/folder behind"
        left = now
    # random kills from outside at seeded times (anywhere, including inside a write)
    rng = random.Random(9)
    completed = 0
    for _ in range(2):
        proc = run_cli(night, out, frozen_rules, reports=True)
        time.sleep(rng.uniform(1.0, 3.5))
        proc.send_signal(signal.SIGKILL)
        code, text = finish(proc)
        assert code in (0, -signal.SIGKILL), text
        completed += code == 0
        kills += code != 0
        assert_visible_state_is_whole(out, clean, clean_counts)
    code, text = finish(run_cli(night, out, frozen_rules, reports=True))
    assert code == 0, text
    completed += 1
    assert_visible_state_is_whole(out, clean, clean_counts)
    for name in OUTPUT_FILES:
        assert (out / name).exists(), name
    for name in FRAMES:  # the frames themselves, exactly (their CSVs were compared byte for byte)
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"),
                                      pd.read_parquet(clean / f"{name}.parquet"), obj=name)
    assert leftovers(out) == [] and not (out / LOCK_FILE).exists()
    con = duckdb.connect(str(out / "qa.duckdb"), read_only=True)
    try:
        statuses = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY 1").fetchall())
    finally:
        con.close()
    # killed after the store commit: recorded, but never as a complete ("ok") run
    assert statuses.get("ok") == completed and statuses.get("stored", 0) >= 4, statuses
    assert kills >= len(KILL_POINTS)
    print(f"{kills} kills ({len(KILL_POINTS)} stage boundaries + random), {completed} completed runs")


def test_killed_pool_runs_leave_the_store_whole(night: Path, frozen_rules: Path, tmp_path: Path) -> None:
    """The pool engine stores each partition while the workers score the next (one transaction open
    through the scoring): a kill after a partition went in, or in the store's last steps, must
    leave the previous complete night, and the rerun must match a clean run (a pool run with the
    same partitions: outputs keep partition order)."""
    pool = ("--workers", "2", "--partition-size", "20")
    clean = tmp_path / "clean"
    code, text = finish(run_cli(night, clean, frozen_rules, reports=False, extra=pool))
    assert code == 0, text
    clean_counts = store_counts(clean / "qa.duckdb")
    out = tmp_path / "out"
    code, text = finish(run_cli(night, out, frozen_rules, reports=False, extra=pool))
    assert code == 0, text
    assert_visible_state_is_whole(out, clean, clean_counts)
    for point in ("pool_partition:1", "store:commit"):
        code, text = finish(run_cli(night, out, frozen_rules, crash=point, reports=False, extra=pool))
        assert code == -signal.SIGKILL, f"{point}: not killed (exit {code}): {text}"
        assert_visible_state_is_whole(out, clean, clean_counts)
    code, text = finish(run_cli(night, out, frozen_rules, reports=False, extra=pool))
    assert code == 0, text
    assert_visible_state_is_whole(out, clean, clean_counts)
    con = duckdb.connect(str(out / "qa.duckdb"), read_only=True)
    try:
        statuses = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY 1").fetchall())
    finally:
        con.close()
    assert statuses == {"ok": 2}, statuses  # the killed runs left no record


def _pids_with_env(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "environ").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_pool_workers_exit_when_the_run_is_killed(night: Path, frozen_rules: Path, tmp_path: Path) -> None:
    """Without a parent watch, spawned pool workers of a SIGKILLed run wait for work forever."""
    marker = f"QA_TEST_POOL_MARK={os.getpid()}_{time.time_ns()}"
    name, value = marker.split("=")
    os.environ[name] = value  # inherited by the run and its workers, so they can be found afterwards
    try:
        # no pipes: orphaned workers would hold them open and block reading the output
        proc = run_cli(night, tmp_path / "out", frozen_rules, crash="pool_partition:1", reports=False,
                       extra=("--workers", "2", "--partition-size", "20"), capture=False)
        code = proc.wait(timeout=120)
    finally:
        del os.environ[name]
    assert code == -signal.SIGKILL
    deadline = time.monotonic() + 15
    while (left := _pids_with_env(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:  # clean up what this test started before failing
        os.kill(pid, signal.SIGKILL)
    assert left == [], "pool workers outlived the killed run"


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_pool_workers_do_not_hold_the_run_lock(night: Path, frozen_rules: Path, tmp_path: Path) -> None:
    """Forked workers start before the run takes its lock: a flock shared with them would outlive
    a killed client for as long as they do."""
    marker = f"QA_TEST_POOL_MARK={os.getpid()}_{time.time_ns()}"
    name, value = marker.split("=")
    os.environ[name] = value
    try:
        proc = run_cli(night, tmp_path / "out", frozen_rules, reports=False, capture=False,
                       extra=("--workers", "2", "--partition-size", "20"))
    finally:
        del os.environ[name]
    lock = str((tmp_path / "out" / LOCK_FILE).resolve())
    seen: dict[int, set[str]] = {}
    try:
        while proc.poll() is None:
            for pid in _pids_with_env(marker):
                try:
                    seen.setdefault(pid, set()).update(os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir())
                except OSError:  # exited meanwhile
                    continue
            time.sleep(0.05)
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0
    assert lock in seen.get(proc.pid, set())  # the client holds it (the check can see it)
    workers = [pid for pid in seen if pid != proc.pid]
    assert len(workers) >= 2, seen.keys()
    assert all(lock not in seen[pid] for pid in workers)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from qa_inspect.pipeline import run_lock
from qa_inspect.errors import LockError
try:
    with run_lock(Path(sys.argv[1]), lambda m: print(m, flush=True)):
        print("HELD", flush=True)
        time.sleep(float(sys.argv[2]))
except LockError as exc:
    print("LOCKED", exc, flush=True)
"""


def test_second_concurrent_run_exits_1_and_crashed_lock_is_taken_over(night: Path, frozen_rules: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "HELD"
        code, text = finish(run_cli(night, out, frozen_rules, reports=False))
        assert code == 1 and "locked by another qa-inspect run" in text and f"pid {holder.pid}" in text, text
        assert "Traceback" not in text and not (out / "qa.duckdb").exists()  # never touched the store
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind by the kill
    taker = subprocess.run([sys.executable, "-c", HOLD_LOCK, str(out), "0"], capture_output=True, text=True,
                           timeout=60)
    assert "taking over stale lock" in taker.stdout and f"pid {holder.pid}" in taker.stdout, taker.stdout
    assert "HELD" in taker.stdout and not (out / LOCK_FILE).exists()


def test_stale_lock_with_reused_pid_is_taken_over(tmp_path: Path) -> None:
    """A dead run's pid now belongs to an unrelated live process started after the lock."""
    from qa_inspect.pipeline import holder_alive, run_lock

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        info = {"pid": other.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
        assert not holder_alive(info, socket.gethostname())
        (tmp_path / LOCK_FILE).write_text(json.dumps(info), encoding="utf-8")
        logs: list[str] = []
        with run_lock(tmp_path, logs.append):
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert any("taking over stale lock" in m for m in logs)
        # the same pid with a lock written after it started is a live run
        live = {**info, "started": "2999-01-01T00:00:00+00:00"}
        assert holder_alive(live, socket.gethostname())
        assert holder_alive({**info, "host": "elsewhere"}, socket.gethostname())
    finally:
        other.kill()
        other.wait()


def test_racing_takeovers_of_one_stale_lock_let_exactly_one_win(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                  "started": "2026-01-01T00:00:00+00:00"}), encoding="utf-8")
    procs = [subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path), "2"], stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    held = [o for o in outs if "HELD" in o]
    assert len(held) == 1, outs
    assert sum("LOCKED" in o for o in outs) == 2, outs


def test_store_held_open_by_another_process_is_a_clear_error(night: Path, frozen_rules: Path,
                                                             tmp_path: Path) -> None:
    db = tmp_path / "shared.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('OPEN', flush=True); time.sleep(30)", str(db)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "OPEN"
        t = time.monotonic()
        code, text = finish(run_cli(night, tmp_path / "out", frozen_rules, reports=False, extra=("--db", str(db))))
        assert code == 1 and "in use by another process" in text and "Traceback" not in text, text
        assert time.monotonic() - t < 30
        assert not (tmp_path / "out" / "conversations.csv").exists()  # failed before scoring, no outputs
    finally:
        holder.kill()
        holder.wait()


def test_csv_outputs_neutralise_formulas_but_keep_numbers(night: Path, frozen_rules: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in night.read_text(encoding="utf-8").splitlines() if line.strip()]
    first, agent = rows[0]["conversation_id"], rows[0]["agent"]
    for r in rows:
        if r["agent"] == agent:  # all of one agent's conversations, so some have findings
            r["agent"] = "@SUM(1)"
        if r["conversation_id"] == first:
            r["buyer"] = '=HYPERLINK("http://x")'
            if r["sender_type"] == "buyer":
                r["message"] = '=HYPERLINK("http://x") 超商取貨一直沒通知'
    src = tmp_path / "in" / NIGHT
    src.parent.mkdir()
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    run_audit([src], out, rules_dir=frozen_rules, render=False)
    raw = (out / "conversations.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    conv = pd.read_csv(out / "conversations.csv", encoding="utf-8-sig", dtype=str)
    assert set(conv.loc[conv[S.AGENT_ID].str.contains("SUM", na=False), S.AGENT_ID]) == {"'@SUM(1)"}
    row = conv[conv[S.CUSTOMER_ID].str.contains("HYPERLINK", na=False)]
    assert list(row[S.CUSTOMER_ID]) == ["'=HYPERLINK(\"http://x\")"]
    assert not conv.drop(columns=[S.CONVERSATION_ID]).stack().str.match(r"^[=+\-@\t\r]").any()
    findings = pd.read_csv(out / "findings.csv", encoding="utf-8-sig", dtype=str)
    mine = findings[findings[S.AGENT_ID].str.contains("SUM", na=False)]
    assert len(mine) and set(mine[S.AGENT_ID]) == {"'@SUM(1)"}
    assert not findings.stack().str.match(r"^[=+@\t\r].").any()  # a lone polarity sign is not a formula
    # numbers stay numbers: signed trace points (negative for "−" findings) are not prefixed
    trace = pd.read_csv(out / "score_trace.csv", encoding="utf-8-sig")
    assert pd.api.types.is_float_dtype(trace[S.POINTS]) and (trace[S.POINTS] < 0).any()
    assert pd.api.types.is_float_dtype(conv.astype({S.TOTAL: float})[S.TOTAL])
    # the parquet outputs keep the original text (only spreadsheets need the apostrophe)
    assert "@SUM(1)" in set(pd.read_parquet(out / "conversations.parquet")[S.AGENT_ID])


def test_write_csv_neutralises_chat_text_and_keeps_negative_points(tmp_path: Path) -> None:
    """Evidence is chat text quoted verbatim: a message that is a formula must not run in Excel."""
    from qa_inspect.pipeline import write_csv

    f = S.findings_frame([{S.CONVERSATION_ID: "c1", S.SHOP_ID: "s", S.AGENT_ID: "@SUM(1)", S.MESSAGE_INDEX: 0,
                           S.RULE_ID: "-R1", S.DIMENSION: "attitude", S.POLARITY: "-", S.SEVERITY: "minor",
                           S.POINTS: -2.5, S.EVIDENCE: '=HYPERLINK("http://x")', S.EVIDENCE_START: 0,
                           S.EVIDENCE_END: 22, S.EXPLANATION: "+1 tab\tx", S.SOURCE: "rule", S.CONFIDENCE: 1.0}])
    path = write_csv(f, tmp_path / "findings.csv")
    back = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False)
    row = back.iloc[0]
    assert row[S.EVIDENCE] == "'=HYPERLINK(\"http://x\")" and row[S.AGENT_ID] == "'@SUM(1)"
    assert row[S.RULE_ID] == "'-R1" and row[S.POLARITY] == "-" and row[S.EXPLANATION] == "'+1 tab\tx"
    assert back[S.POINTS].dtype.kind == "f" and row[S.POINTS] == -2.5  # numbers are not prefixed
    assert (path.stat().st_mode & 0o777) != 0o600  # readable like the parquet outputs, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["findings.csv"]  # no temp file left


def test_reports_are_swapped_in_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """render_reports writes file by file; a run dying half-way must not replace the last good set.
    The renderer is replaced by one that dies after writing one page (the swap is under test)."""
    from types import SimpleNamespace

    import qa_inspect.reports.render as render_mod
    from qa_inspect.pipeline import Reporter, clean_stale, swap_in_reports

    def render(pages: dict[str, str], fail: bool) -> object:
        def fake(_data: object, out_dir: Path, **_kw: object) -> object:
            root = Path(out_dir) / "reports"
            root.mkdir(parents=True)
            for i, (name, text) in enumerate(pages.items()):
                if fail and i == 1:
                    raise RuntimeError("killed half-way")
                (root / name).write_text(text, encoding="utf-8")
            return SimpleNamespace(index=root.resolve() / "index.html")
        return fake

    (tmp_path / "reports").mkdir()
    for name in ("index.html", "coaching.html"):
        (tmp_path / "reports" / name).write_text("old", encoding="utf-8")
    args = (SimpleNamespace(run_id="r1"), tmp_path, Reporter(quiet=True))
    new = {"index.html": "new", "coaching.html": "new"}
    monkeypatch.setattr(render_mod, "render_reports", render(new, fail=True))
    with pytest.raises(RuntimeError):
        swap_in_reports(*args)
    assert {p.read_text() for p in (tmp_path / "reports").iterdir()} == {"old"}  # the old set, whole
    assert clean_stale(tmp_path, OUTPUT_FILES) and leftovers(tmp_path) == []  # next run removes the staging
    monkeypatch.setattr(render_mod, "render_reports", render(new, fail=False))
    index = swap_in_reports(*args)
    assert index == str(tmp_path / "reports" / "index.html")
    assert {p.read_text() for p in (tmp_path / "reports").iterdir()} == {"new"} and leftovers(tmp_path) == []
