"""The nightly run streams: many small partitions give exactly the outputs of one partition, the
client spills partition results to disk instead of holding them, and memory does not follow the
night's size.

Inputs include a sessionised Qianniu export and conversations split across two input files (an
id'd JSONL conversation and a Qianniu buyer section), the cases where a partition boundary could
cut a conversation.
"""

from __future__ import annotations

import importlib.util
import sys
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect.ingest import ingest_paths
from qa_inspect.pipeline import (
    SPOOL_PREFIX,
    Partitions,
    load_context,
    run_audit,
    split_partitions,
    write_csv_parts,
    write_parquet_parts,
)
from qa_inspect.safe_io import write_csv_safe

REPO = Path(__file__).resolve().parents[1]
JSONL = "tw_meiyan_2026-11-23.jsonl"
QIANNIU = "tmall_yuejia_qianniu_2026-11-23.txt"


def _split_jsonl(src: Path, a: Path, b: Path) -> str:
    """Halves of a JSONL export; returns the conversation id that spans both files."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    mid = len(lines) // 2
    a.write_text("".join(lines[:mid]), encoding="utf-8")
    b.write_text("".join(lines[mid:]), encoding="utf-8")
    cid = pd.read_json(a, lines=True)["conversation_id"].iloc[-1]
    assert cid in set(pd.read_json(b, lines=True)["conversation_id"])
    return str(cid)


def _split_qianniu(src: Path, a: Path, b: Path) -> str:
    """Two Qianniu exports, a buyer section cut in the middle (the second file repeats the magic
    line and the section header, as the next export would); returns the buyer."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    sections = [i for i, ln in enumerate(lines) if ln.startswith("===== 买家:")]
    start = sections[len(sections) // 2]
    end = next((i for i in sections if i > start), len(lines))
    cut = start + 1 + max(1, (end - start - 1) // 2)
    a.write_text("".join(lines[:cut]), encoding="utf-8")
    b.write_text(lines[0] + lines[start] + "".join(lines[cut:]), encoding="utf-8")
    return lines[start].strip().strip("=").strip().split(":", 1)[1]


@pytest.fixture(scope="module")
def inputs(sample_logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if not (sample_logs_dir / JSONL).exists():
        pytest.skip("sample_logs/ not generated yet")
    d = tmp_path_factory.mktemp("split_inputs")
    files = [d / "tw_a.jsonl", d / "tw_b.jsonl", d / "qn_a.txt", d / "qn_b.txt"]
    _split_jsonl(sample_logs_dir / JSONL, files[0], files[1])
    _split_qianniu(sample_logs_dir / QIANNIU, files[2], files[3])
    return files


@pytest.fixture(scope="module")
def runs(inputs: list[Path], rules_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    whole = tmp_path_factory.mktemp("whole")
    many = tmp_path_factory.mktemp("many")
    (many / f"{SPOOL_PREFIX}killed-run").mkdir()  # what a killed run leaves: the next run removes it
    s1 = run_audit(inputs, whole, rules_dir=rules_dir, partition_size=100_000, render=False)
    s2 = run_audit(inputs, many, rules_dir=rules_dir, partition_size=3, render=False)
    assert s1.partitions == 1 and s2.partitions > 10
    return whole, many


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns), na_position="first", kind="stable").reset_index(drop=True)


def test_split_conversations_stay_whole(inputs: list[Path], rules_dir: Path) -> None:
    msgs = ingest_paths(inputs, rules_dir=rules_dir).messages
    parts = Partitions(msgs, 3)
    seen: dict[str, int] = {}
    for i in range(len(parts)):
        for cid in parts[i][S.CONVERSATION_ID].unique():
            assert cid not in seen, f"conversation {cid} in partitions {seen[cid]} and {i}"
            seen[cid] = i
    assert len(seen) == msgs[S.CONVERSATION_ID].nunique()
    # the lazy partitions are exactly split_partitions' copies
    eager = split_partitions(msgs, 3)
    assert len(eager) == len(parts)
    for i in (0, len(parts) // 2, len(parts) - 1):
        pd.testing.assert_frame_equal(parts[i], eager[i])
    # the JSONL conversation cut between the two files is one conversation with both halves
    tw = msgs[msgs[S.SOURCE_FILE].astype(str).str.contains("tw_")]
    per_conv = tw.groupby(S.CONVERSATION_ID)[S.SOURCE_FILE].nunique()
    assert (per_conv == 2).sum() == 1
    qn = msgs[msgs[S.SOURCE_FILE].astype(str).str.contains("qn_")]
    assert (qn.groupby(S.CONVERSATION_ID)[S.SOURCE_FILE].nunique() == 2).sum() >= 1


def test_many_partitions_give_the_same_outputs_as_one(runs: tuple[Path, Path]) -> None:
    whole, many = runs
    for name in ("conversations", "findings", "score_trace", "review_queue", "agents", "shops"):
        a = pd.read_parquet(whole / f"{name}.parquet")
        b = pd.read_parquet(many / f"{name}.parquet")
        assert len(a) > 0, name
        pd.testing.assert_frame_equal(_sorted(a), _sorted(b), check_exact=True, obj=name)
        ca = pd.read_csv(whole / f"{name}.csv", encoding="utf-8-sig", dtype=str, keep_default_na=False)
        cb = pd.read_csv(many / f"{name}.csv", encoding="utf-8-sig", dtype=str, keep_default_na=False)
        pd.testing.assert_frame_equal(_sorted(ca), _sorted(cb), obj=f"{name}.csv")
    # KPIs are per-agent sums over conversations: identical files, byte for byte
    for name in ("agents.csv", "shops.csv"):
        assert (whole / name).read_bytes() == (many / name).read_bytes(), name
    assert not [p.name for p in many.iterdir() if p.name.startswith(SPOOL_PREFIX)]  # spool removed


def test_store_rows_equal_output_rows(runs: tuple[Path, Path]) -> None:
    import duckdb

    for out in runs:
        con = duckdb.connect(str(out / "qa.duckdb"), read_only=True)
        try:
            n = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("messages", "findings", "score_trace")}
            nulls = con.execute("SELECT count(*) FROM messages WHERE norm_text IS NULL OR ts IS NULL").fetchone()[0]
        finally:
            con.close()
        assert n["messages"] == len(pd.read_parquet(out / "messages.parquet"))
        assert n["findings"] == len(pd.read_parquet(out / "findings.parquet")) > 0
        assert n["score_trace"] == len(pd.read_parquet(out / "score_trace.parquet"))
        assert nulls == 0


def test_part_writers_match_whole_frame_writers(tmp_path: Path) -> None:
    """Parts whose dtypes differ (an int column with a null only in one part, a column that is
    all-null in one part) and formula-like text: the same CSV bytes and Parquet frame as writing
    the concatenated frame at once."""
    p1 = pd.DataFrame({"i": [1, 2], "s": [None, None], "t": ["=1+1", "好"], "f": [0.5, 1.0]})
    p2 = pd.DataFrame({"i": [3, None], "s": ["x", "-y"], "t": ["@a", "b"], "f": [2.0, None]})
    p3 = pd.DataFrame({"i": [7], "s": ["z"], "t": ["+c"], "f": [3.25]})
    files = []
    for k, p in enumerate((p1, p2, p3)):
        f = tmp_path / f"part-{k:06d}.parquet"
        p.to_parquet(f, index=False)
        files.append(f)
    whole = pd.concat([p1, p2, p3], ignore_index=True)
    write_csv_safe(whole, tmp_path / "whole.csv")
    write_csv_parts(files, None, tmp_path / "parts.csv")
    assert (tmp_path / "parts.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    write_parquet_parts(files, ["t", "i", "missing"], tmp_path / "parts.parquet")
    got = pd.read_parquet(tmp_path / "parts.parquet")
    assert list(got.columns) == ["t", "i", "missing"] and got["missing"].isna().all()
    assert got["i"].tolist()[:3] == [1.0, 2.0, 3.0] and pd.isna(got["i"].iloc[3])
    assert got["t"].tolist() == whole["t"].tolist()


def _gen_module() -> object:
    spec = importlib.util.spec_from_file_location("qa_bench_gen", REPO / "bench" / "gen.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_run_memory_follows_the_partition_not_the_night(rules_dir: Path, tmp_path: Path) -> None:
    """Python heap peak (tracemalloc) of whole runs on generated nights of growing size
    (3,000 and 12,000 messages): with small partitions the run streams (ingest spills buckets,
    results go to the spool), so 4x the night costs about the same; one partition holding the
    night costs more. At 6,000 messages the one-partition run was only ~15 % above the streaming
    one once the Arrow CSV parse stopped holding a Python string per cell: too close to tell apart
    reliably. Not timed."""
    if not (REPO / "bench" / "gen.py").exists():
        pytest.skip("bench/gen.py not available")
    import subprocess

    nights = {}
    for n in (3000, 12000):
        nights[n] = tmp_path / f"m{n}.csv"
        subprocess.run([sys.executable, str(REPO / "bench" / "gen.py"), "--messages", str(n), "--out",
                        str(nights[n])], check=True, capture_output=True)
    load_context(rules_dir)  # imports and lazy module state before measuring
    peaks: dict[tuple[int, int], int] = {}
    for n, size in ((3000, 20), (12000, 20), (12000, 100_000)):
        tracemalloc.start()
        s = run_audit([nights[n]], tmp_path / f"out{n}_{size}", rules_dir=rules_dir, partition_size=size,
                      render=False)
        peaks[(n, size)] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert s.messages + s.rejects == n
        assert (s.partitions > 5) == (size == 20)
    assert peaks[(12000, 20)] < 1.3 * peaks[(3000, 20)], peaks
    assert peaks[(12000, 20)] < 0.85 * peaks[(12000, 100_000)], peaks


def test_bucket_and_chunk_sizing(tmp_path: Path) -> None:
    from qa_inspect.ingest.stream import CHUNK_BYTES
    from qa_inspect.pipeline import MAX_BUCKETS, bucket_count, chunk_size

    assert bucket_count(0, 2000) == 1 and bucket_count(30_000, 2000) == 1
    assert bucket_count(1_000_000, 2000) == 34  # ceil(1M / (2000 x 15))
    assert bucket_count(10_000, 1) == 667 and bucket_count(10**9, 1) == MAX_BUCKETS
    with pytest.raises(Exception, match="at least 1"):
        bucket_count(10, 0)
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate(64 << 20)  # sparse: only the size matters here
    assert chunk_size([big], "local", 1) == CHUNK_BYTES
    assert chunk_size([big], "pool", 2) == 8 << 20  # 4 chunks per worker
    assert chunk_size([tmp_path], "pool", 8) == 4 << 20  # never below 4 MB


def test_output_copy_retries_with_more_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DuckDB copy that runs out of memory under the cap is retried with 4x, then 16x, and the
    file is the same as with room to spare; the last failure is raised, not swallowed."""
    import duckdb

    import qa_inspect.pipeline as P

    f = tmp_path / "part-000000.parquet"
    pd.DataFrame({"conversation_id": [f"c{i % 97}" for i in range(5000)], "t": ["=x" * 40] * 5000}).to_parquet(f)
    P._duck_parts([f], None, ("conversation_id",), True, tmp_path / "ok.csv")
    limits: list[str] = []
    real = duckdb.connect

    class Starved:
        """A connection whose queries run out of memory (as DuckDB's do under a too small cap)."""

        def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
            self.con = con

        def execute(self, sql: str) -> None:
            raise duckdb.OutOfMemoryException("Out of Memory Error: test")

        def close(self) -> None:
            self.con.close()

    def connect(*args: object, config: dict[str, str], fail: int) -> object:
        limits.append(config["memory_limit"])
        con = real(*args, config=config)
        return Starved(con) if len(limits) <= fail else con

    monkeypatch.setattr(duckdb, "connect", lambda *a, config: connect(*a, config=config, fail=2))
    P._duck_parts([f], None, ("conversation_id",), True, tmp_path / "retried.csv")
    assert limits == [f"{P.DUCK_MEMORY}MB", f"{P.DUCK_MEMORY * 4}MB", f"{P.DUCK_MEMORY * 16}MB"]
    assert (tmp_path / "retried.csv").read_bytes() == (tmp_path / "ok.csv").read_bytes()
    limits.clear()
    monkeypatch.setattr(duckdb, "connect", lambda *a, config: connect(*a, config=config, fail=3))
    with pytest.raises(duckdb.OutOfMemoryException):
        P._duck_parts([f], None, ("conversation_id",), True, tmp_path / "never.csv")
    assert len(limits) == 3


def test_result_spool_keeps_no_partition_frames_in_memory(sample_logs_dir: Path, rules_dir: Path,
                                                         tmp_path: Path) -> None:
    """Every frame of a partition result goes to the spool (the client held hundreds of small
    per-conversation frames through pass 2 before: ~4x their size in RSS); reading them back gives
    exactly the frames, in partition order, with their dtypes."""
    from qa_inspect.kpis import events_frame
    from qa_inspect.pipeline import ResultSpool, process_partition

    ctx = load_context(rules_dir)
    msgs = ingest_paths([sample_logs_dir], rules_dir=rules_dir).messages
    parts = Partitions(msgs, 40)
    assert len(parts) >= 3
    spool = ResultSpool(tmp_path / "spool", ctx.shops)
    kept: dict[str, list[pd.DataFrame]] = {"conversations": [], "review_items": [], "stats": [], "events": []}
    n_messages = 0
    for i in range(3):
        r = process_partition(parts[i], ctx)
        kept["conversations"].append(r.conversations.copy())
        kept["review_items"].append(r.review_items.copy())
        kept["stats"].append(r.stats.copy())
        kept["events"].append(events_frame(r.messages, ctx.shops))
        n_messages += len(r.messages)
        spool(i, r)
        for frame in (r.conversations, r.review_items, r.stats, r.messages, r.findings, r.trace):
            assert frame.empty  # nothing of the partition stays with the client
    assert spool.rows["messages"] == n_messages
    assert spool.rows["conversations"] == sum(len(f) for f in kept["conversations"])
    assert all(len(f) for f in kept["conversations"])
    for name, frames in kept.items():
        nonempty = [f for f in frames if len(f)]
        none = pd.DataFrame({"nothing": []})
        got = spool.frame(name, none)
        if not nonempty:  # e.g. no review items in these partitions: the caller's empty frame
            assert got is none
            continue
        pd.testing.assert_frame_equal(got, pd.concat(nonempty, ignore_index=True), check_exact=True)



def _write_niceness(target: Path) -> None:
    import os

    target.write_text(str(os.nice(0)), encoding="utf-8")


def test_pool_copies_run_behind_the_client(tmp_path: Path) -> None:
    """A staged copy in a pool worker lowers that worker's priority (once), never the client's."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from qa_inspect import pipeline as P

    mine = os.nice(0)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name in ("a", "b"):  # twice: the second call leaves the priority as it is
            pool.submit(P._behind_client, _write_niceness, tmp_path / name).result()
    got = [int((tmp_path / n).read_text(encoding="utf-8")) for n in ("a", "b")]
    assert got == [max(mine, P.COPY_NICENESS)] * 2
    assert os.nice(0) == mine
