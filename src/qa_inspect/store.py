"""DuckDB store: the history of every night's audit.

Idempotent by conversation id + rule-set version: a run deletes then inserts its conversations'
rows in ONE transaction, so re-running a night replaces it and a crash leaves the previous state.
New nights add rows, so trends across nights are plain SQL over ``v_conversations`` (the latest
scoring of each conversation, with human overrides applied).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.errors import BugError, UsageError, UserError

RULESET_VERSION = "ruleset_version"
SCORED_AT = "scored_at"
EFFECTIVE_TOTAL = "effective_total"
DEFAULT_DB = "qa.duckdb"

_SCORES = ", ".join(f"{c} DOUBLE" for c in S.SCORE_COLUMNS)
_KPI_INTS = ("conversations", "messages", "n_customer_messages", "n_agent_messages", "slow_replies",
             "n_questions", "unanswered", "inquiries", "converted_inquiries", "nights", "n_scored", "n_veto",
             "n_replied", "n_turns_timed")
_KPI_FLOATS = ("first_response_avg_s", "avg_response_s", "reply_rate", "conversion_rate", "attributed_sales",
               "consultations_per_day", "mean_total", "response_s_sum")
_KPIS = ", ".join([*(f"{c} BIGINT" for c in _KPI_INTS), *(f"{c} DOUBLE" for c in _KPI_FLOATS)])

DDL = f"""
CREATE TABLE IF NOT EXISTS runs (
  run_id VARCHAR PRIMARY KEY, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status VARCHAR,
  ruleset_version VARCHAR, qa_version VARCHAR, inputs VARCHAR, out_dir VARCHAR,
  n_conversations BIGINT, n_messages BIGINT, n_findings BIGINT, n_rejects BIGINT, n_review_items BIGINT,
  nights VARCHAR);
CREATE TABLE IF NOT EXISTS conversations (
  conversation_id VARCHAR NOT NULL, shop_id VARCHAR, platform VARCHAR, agent_id VARCHAR,
  customer_id VARCHAR, night VARCHAR, started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, n_messages BIGINT,
  first_response_s DOUBLE, {_SCORES}, total DOUBLE, grade VARCHAR, veto BOOLEAN, veto_rule VARCHAR,
  dissatisfaction_risk DOUBLE, n_findings BIGINT, na_reasons VARCHAR,
  run_id VARCHAR, ruleset_version VARCHAR NOT NULL, scored_at TIMESTAMPTZ,
  PRIMARY KEY (conversation_id, ruleset_version));
CREATE TABLE IF NOT EXISTS messages (
  platform VARCHAR, shop_id VARCHAR, conversation_id VARCHAR NOT NULL, seq BIGINT NOT NULL,
  ts TIMESTAMPTZ, role VARCHAR, agent_id VARCHAR, customer_id VARCHAR, text VARCHAR, sku VARCHAR,
  is_auto_reply BOOLEAN, event VARCHAR, amount DOUBLE, source_file VARCHAR, source_line BIGINT,
  norm_text VARCHAR, run_id VARCHAR);
CREATE TABLE IF NOT EXISTS findings (
  conversation_id VARCHAR NOT NULL, shop_id VARCHAR, agent_id VARCHAR, message_index BIGINT,
  rule_id VARCHAR, dimension VARCHAR, polarity VARCHAR, severity VARCHAR, points DOUBLE,
  evidence VARCHAR, evidence_start BIGINT, evidence_end BIGINT, explanation VARCHAR, source VARCHAR,
  confidence DOUBLE, run_id VARCHAR, ruleset_version VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS score_trace (
  conversation_id VARCHAR NOT NULL, shop_id VARCHAR, agent_id VARCHAR, dimension VARCHAR,
  item_id VARCHAR, rule_id VARCHAR, message_index BIGINT, polarity VARCHAR, source VARCHAR,
  confidence DOUBLE, raw_points DOUBLE, points DOUBLE, capped_by VARCHAR, veto BOOLEAN,
  evidence VARCHAR, explanation VARCHAR, run_id VARCHAR, ruleset_version VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS conversation_kpis (
  conversation_id VARCHAR NOT NULL, shop_id VARCHAR, agent_id VARCHAR, customer_id VARCHAR,
  night VARCHAR, started_at TIMESTAMPTZ, n_messages BIGINT, n_customer_messages BIGINT,
  n_agent_messages BIGINT, n_replied BIGINT, n_turns_timed BIGINT, response_s_sum DOUBLE,
  n_slow_replies BIGINT, n_questions BIGINT, n_unanswered_questions BIGINT,
  first_response_in_hours_s DOUBLE, inquiry BOOLEAN, converted_inquiries BOOLEAN, sales_amount DOUBLE,
  run_id VARCHAR, ruleset_version VARCHAR NOT NULL, PRIMARY KEY (conversation_id, ruleset_version));
CREATE TABLE IF NOT EXISTS review_queue (
  conversation_id VARCHAR NOT NULL, shop_id VARCHAR, agent_id VARCHAR, night VARCHAR, reason VARCHAR,
  detail VARCHAR, priority DOUBLE, total DOUBLE, run_id VARCHAR, ruleset_version VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS reviews (
  conversation_id VARCHAR NOT NULL, reviewer VARCHAR NOT NULL, {_SCORES}, total DOUBLE, grade VARCHAR,
  verdict VARCHAR, override BOOLEAN, comment VARCHAR, source_file VARCHAR, imported_at TIMESTAMPTZ,
  PRIMARY KEY (conversation_id, reviewer));
CREATE TABLE IF NOT EXISTS agent_kpis (run_id VARCHAR NOT NULL, shop_id VARCHAR, agent_id VARCHAR, {_KPIS});
CREATE TABLE IF NOT EXISTS shop_kpis (run_id VARCHAR NOT NULL, shop_id VARCHAR, {_KPIS});
CREATE TABLE IF NOT EXISTS outbox (
  run_id VARCHAR, shop_id VARCHAR, recipient VARCHAR, subject VARCHAR, status VARCHAR,
  attempts BIGINT DEFAULT 0, last_error VARCHAR, sent_at TIMESTAMPTZ, message_id VARCHAR);
CREATE OR REPLACE VIEW v_conversations AS
WITH latest AS (
  SELECT * FROM conversations
  QUALIFY row_number() OVER (PARTITION BY conversation_id ORDER BY scored_at DESC, run_id DESC) = 1),
ov AS (
  SELECT conversation_id, total AS human_total FROM reviews WHERE override
  QUALIFY row_number() OVER (PARTITION BY conversation_id ORDER BY imported_at DESC, reviewer) = 1)
SELECT latest.*, ov.human_total, ov.human_total IS NOT NULL AS overridden,
       coalesce(ov.human_total, latest.total) AS effective_total
FROM latest LEFT JOIN ov USING (conversation_id);
"""

# (table, columns in the frame to insert) for the per-run, per-conversation tables
_RUN_TABLES = ("conversations", "findings", "score_trace", "conversation_kpis", "review_queue")
# messages has no primary key: (conversation_id, seq) is unique by construction (ingest numbers each
# conversation's messages; a run deletes its conversations' messages before inserting them). The
# key's index cost 3x the insert time and +120 MB at 5M messages and cannot spill to disk. Stores
# created before keep their key; it only makes their inserts slower.


STORE_MEMORY = "128MB"  # DuckDB's buffer limit per connection (default 80 % of RAM); it spills beyond it
RETRY_MEMORY = ("1GB", "4GB", "16GB")  # write_run again with these when a night does not fit (an index)


def connect(db_path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and create if needed) the store. A locked or corrupt file is a user error."""
    path = Path(db_path)
    if read_only and not path.exists():
        raise UserError(f"store not found: {path} (run 'qa-inspect run ... --out DIR' first or pass --db)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only, config={"memory_limit": STORE_MEMORY})
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            # DuckDB allows one writing process per file: another run, sample, report... has it open
            raise UserError(f"store {path} is in use by another process; wait for it to finish or use another "
                            f"--db ({_first_line(exc)})") from None
        raise UserError(f"cannot open store {path}: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise UserError(f"cannot open store {path} (not a DuckDB file, or damaged): {_first_line(exc)}") from None
    if not read_only:
        con.execute(DDL)
    return con


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def resolve_db(db: Path | str | None, out_dir: Path | str | None) -> Path:
    """``--db FILE`` or ``--out DIR`` (→ DIR/qa.duckdb); one is needed."""
    if db is not None:
        return Path(db)
    if out_dir is not None:
        return Path(out_dir) / DEFAULT_DB
    raise UsageError("pass --db FILE or --out DIR (the folder of a run, holding qa.duckdb)")


@contextmanager
def open_store(db_path: Path | str, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(db_path, read_only=read_only)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing: any exception rolls back every statement since BEGIN."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> Iterator[str]:
    """``frame`` as the view ``name`` for the block. A failed statement aborts the transaction and
    DuckDB then refuses the unregister too: the error that aborted it is the one raised (an
    out-of-memory must reach write_run's retry, not hide behind "transaction is aborted")."""
    con.register(name, frame)
    try:
        yield name
    except BaseException:
        with suppress(duckdb.Error):
            con.unregister(name)
        raise
    con.unregister(name)


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, df: pd.DataFrame, **constants: object) -> int:
    """Insert the frame's columns that the table has (BY NAME); ``constants`` fill extra columns."""
    if df is None or df.empty:
        return 0
    cols = table_columns(con, table)
    keep = [c for c in df.columns if c in cols and c not in constants]
    # Lists/objects DuckDB cannot map (e.g. tokens) never reach here: only table columns are kept.
    # The constants are query parameters, not columns added to a copy of the frame (a copied
    # 345k-row conversations frame cost ~150 MB at 5M messages).
    frame = df[keep]
    select = [f'"{c}"' for c in keep] + [f'? AS "{k}"' for k in constants]
    with registered(con, f"_ins_{table}", frame) as name:
        con.execute(f"INSERT INTO {table} BY NAME SELECT {', '.join(select)} FROM {name}", list(constants.values()))
    return len(df)


@dataclass(frozen=True)
class FrameParts:
    """Rows spread over pickled frames (a run's spool of per-conversation frames), inserted a batch
    of parts at a time so the whole frame never has to be in memory during the store write."""

    files: Sequence[Path]

    def frames(self, min_rows: int = 50_000) -> Iterator[pd.DataFrame]:
        """The parts in order, consecutive ones concatenated up to ``min_rows`` rows: one INSERT per
        partition of 2,000 conversations cost ~0.4 s per table at 1M messages (each joined the
        whole attribution), while 50k rows stay a few MB."""
        import pickle

        batch: list[pd.DataFrame] = []
        rows = 0
        for f in self.files:
            with open(f, "rb") as fh:
                part = pickle.load(fh)
            batch.append(part)
            rows += len(part)
            if rows >= min_rows:
                yield pd.concat(batch, ignore_index=True) if len(batch) > 1 else batch[0]
                batch, rows = [], 0
        if batch:
            yield pd.concat(batch, ignore_index=True) if len(batch) > 1 else batch[0]


def insert_joined(con: duckdb.DuckDBPyConnection, table: str, left: pd.DataFrame | FrameParts,
                  right: pd.DataFrame | None, on: str, **constants: object) -> int:
    """insert_frame of ``left.merge(right, on=on, how="left")`` joined by DuckDB, so the merged
    copy never exists as a pandas frame (the run's KPI stats: ~75 MB at 5M messages); ``right``
    None inserts ``left`` as it is. FrameParts go to DuckDB as Parquet (:func:`parquet_of`)."""
    if isinstance(left, FrameParts):
        with parquet_of(left) as parts:
            return insert_parquet(con, table, parts, right=right, on=on, **constants)
    if right is None:
        return insert_frame(con, table, left, **constants)
    if left is None or left.empty:
        return 0
    cols = table_columns(con, table)
    lcols = [c for c in left.columns if c in cols and c not in constants]
    with registered(con, "_ins_right", right), registered(con, "_ins_left", left[lcols]):
        con.execute(f"INSERT INTO {table} BY NAME SELECT {_joined_select(lcols, right, cols, constants)} "
                    f'FROM _ins_left l LEFT JOIN _ins_right r ON l."{on}" = r."{on}"', list(constants.values()))
    return len(left)


def _joined_select(lcols: Sequence[str], right: pd.DataFrame, cols: Sequence[str], constants: dict[str, object]) -> str:
    rcols = [c for c in right.columns if c in cols and c not in constants and c not in lcols]
    return ", ".join([f'l."{c}"' for c in lcols] + [f'r."{c}"' for c in rcols] + [f'? AS "{k}"' for k in constants])


@contextmanager
def parquet_of(parts: FrameParts) -> Iterator[ParquetParts]:
    """The parts as Parquet files (next to them, removed afterwards), for one insert: DuckDB's
    pandas scan keeps ~2x the memory of its Parquet reader (345k KPI rows at 5M messages: +161
    against +72 MB), and it is the store write that sets the night's peak."""
    import shutil
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    where = Path(parts.files[0]).parent if parts.files else None
    folder = Path(tempfile.mkdtemp(prefix="qa-store-", dir=where))
    try:
        files = []
        for i, frame in enumerate(parts.frames()):
            if len(frame):
                files.append(folder / f"part-{i:06d}.parquet")
                pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), files[-1], compression="none")
        yield ParquetParts(tuple(files))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class ParquetParts:
    """Rows spread over Parquet files (a run's spool, one file per partition): DuckDB inserts them
    straight from disk, so a night's messages and findings never have to be one frame in memory."""

    files: Sequence[Path]


Rows = pd.DataFrame | ParquetParts


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def insert_parquet(con: duckdb.DuckDBPyConnection, table: str, parts: ParquetParts, *,
                   right: pd.DataFrame | None = None, on: str = S.CONVERSATION_ID, **constants: object) -> int:
    """insert_frame for Parquet parts: the parts' columns that the table has (BY NAME; a column
    missing from some parts is NULL there), ``constants`` fill extra columns; with ``right``,
    left-joined with it on ``on`` as in insert_joined."""
    if not parts.files:
        return 0
    import pyarrow.parquet as pq

    names: list[str] = []
    for f in parts.files:
        names += [n for n in pq.read_schema(f).names if n not in names]
    cols = table_columns(con, table)
    keep = [c for c in names if c in cols and c not in constants]
    files = "[" + ", ".join(_sql_str(str(f)) for f in parts.files) + "]"
    source = f"read_parquet({files}, union_by_name = true)"
    if right is None:
        select = ", ".join([f'"{c}"' for c in keep] + [f'? AS "{k}"' for k in constants])
        res = con.execute(f"INSERT INTO {table} BY NAME SELECT {select} FROM {source}",
                          list(constants.values())).fetchone()
        return int(res[0]) if res else 0
    with registered(con, "_ins_right", right):
        res = con.execute(f"INSERT INTO {table} BY NAME SELECT {_joined_select(keep, right, cols, constants)} "
                          f'FROM {source} l LEFT JOIN _ins_right r ON l."{on}" = r."{on}"',
                          list(constants.values())).fetchone()
    return int(res[0]) if res else 0


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Rows, **constants: object) -> int:
    if isinstance(rows, ParquetParts):
        return insert_parquet(con, table, rows, **constants)
    return insert_frame(con, table, rows, **constants)


@dataclass
class RunRecord:
    run_id: str
    started_at: datetime
    ruleset_version: str
    qa_version: str = ""
    inputs: Sequence[str] = ()
    out_dir: str = ""
    status: str = "ok"
    finished_at: datetime | None = None
    n_rejects: int = 0
    nights: list[str] = field(default_factory=list)


Checkpoint = Callable[[str], None]


def out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.OutOfMemoryException) or (
        isinstance(exc, duckdb.TransactionException) and "could not allocate" in str(exc))


def write_run(con: duckdb.DuckDBPyConnection, run: RunRecord, *, conversations: pd.DataFrame | FrameParts,
              messages: Rows, findings: Rows, trace: Rows,
              conversation_kpis: pd.DataFrame | FrameParts, review_queue: pd.DataFrame,
              checkpoint: Checkpoint | None = None, attribution: pd.DataFrame | None = None,
              conversation_ids: pd.Series | None = None) -> dict[str, int]:
    """:func:`write_run_once`; a night too big for the connection's memory cap (an index cannot
    spill: with the old primary key on messages, 5M messages needed more than 256 MB at COMMIT) is
    written again, whole, with a larger cap instead of failing the run. The failed attempt was
    rolled back.

    One DuckDB thread: with two, the same inserts cost 25 % more CPU (200k messages: 0.66 s against
    0.52 s), and in a pool run the other core is busy writing the output files."""
    threads = _one_thread(con)
    try:
        return _write_run_retrying(con, run, conversations=conversations, messages=messages, findings=findings,
                                   trace=trace, conversation_kpis=conversation_kpis, review_queue=review_queue,
                                   checkpoint=checkpoint, attribution=attribution,
                                   conversation_ids=conversation_ids)
    finally:
        con.execute(f"SET threads = {threads}")


def _one_thread(con: duckdb.DuckDBPyConnection) -> int:
    """Set the connection to one DuckDB thread for a write; returns the setting to restore."""
    threads = int(con.execute("SELECT current_setting('threads')").fetchone()[0])  # type: ignore[index]
    con.execute("SET threads = 1")
    return threads


def _write_run_retrying(con: duckdb.DuckDBPyConnection, run: RunRecord, *,
                        conversations: pd.DataFrame | FrameParts, messages: Rows, findings: Rows, trace: Rows,
                        conversation_kpis: pd.DataFrame | FrameParts, review_queue: pd.DataFrame,
                        checkpoint: Checkpoint | None, attribution: pd.DataFrame | None,
                        conversation_ids: pd.Series | None) -> dict[str, int]:
    for limit in (None, *RETRY_MEMORY):
        if limit is not None:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # a failed COMMIT has already ended the transaction
            con.execute(f"SET memory_limit = '{limit}'")
        try:
            return write_run_once(con, run, conversations=conversations, messages=messages, findings=findings,
                                  trace=trace, conversation_kpis=conversation_kpis, review_queue=review_queue,
                                  checkpoint=checkpoint, attribution=attribution, conversation_ids=conversation_ids)
        except duckdb.Error as exc:
            if not out_of_memory(exc) or limit == RETRY_MEMORY[-1]:
                raise
    raise BugError("write_run: unreachable")  # pragma: no cover


def write_run_once(con: duckdb.DuckDBPyConnection, run: RunRecord, *, conversations: pd.DataFrame | FrameParts,
                   messages: Rows, findings: Rows, trace: Rows,
                   conversation_kpis: pd.DataFrame | FrameParts, review_queue: pd.DataFrame,
                   checkpoint: Checkpoint | None = None, attribution: pd.DataFrame | None = None,
                   conversation_ids: pd.Series | None = None) -> dict[str, int]:
    """Replace this run's conversations (by id + rule-set version) and record the run, atomically.

    ``attribution`` (per conversation id): when given, the conversation_kpis rows are
    ``conversation_kpis`` (a frame, or FrameParts) joined with it (by conversation id, as a left join).
    ``conversations`` may be FrameParts (the run's spool: not in memory during the write); then
    ``conversation_ids`` (the run's conversation ids) is required.

    ``checkpoint(step)`` is called inside the transaction after the deletes (``deleted``), after
    each table's insert (``inserted:<table>``) and before COMMIT (``commit``): the crash-safety
    tests kill the process there to prove a crash leaves the previous state. ``messages``,
    ``findings`` and ``trace`` may be frames or Parquet parts (the nightly run's spool).
    """
    step = checkpoint or (lambda _s: None)
    ids = _run_ids(conversations, conversation_ids)
    counts: dict[str, int] = {}
    with transaction(con):
        _delete_previous(con, ids, run)
        step("deleted")
        counts["conversations"] = _insert_conversations(con, run, conversations, len(ids))
        step("inserted:conversations")
        counts["messages"] = insert_rows(con, "messages", messages, run_id=run.run_id)
        counts["findings"] = insert_rows(con, "findings", findings, **_common(run))
        step("inserted:findings")
        counts["score_trace"] = insert_rows(con, "score_trace", trace, **_common(run))
        _insert_rest(con, run, counts, conversation_kpis, attribution, review_queue)
        step("commit")
    return counts


def _common(run: RunRecord) -> dict[str, object]:
    return {S.RUN_ID: run.run_id, RULESET_VERSION: run.ruleset_version}


def _run_ids(conversations: pd.DataFrame | FrameParts, conversation_ids: pd.Series | None) -> pd.DataFrame:
    if conversation_ids is None:
        if isinstance(conversations, FrameParts):
            raise BugError("write_run: conversations as parts need conversation_ids")
        conversation_ids = conversations[S.CONVERSATION_ID]
    if conversation_ids.duplicated().any():
        raise BugError("write_run: duplicate conversation ids in one run")
    return pd.DataFrame({S.CONVERSATION_ID: conversation_ids.astype(str).unique()})


def _delete_previous(con: duckdb.DuckDBPyConnection, ids: pd.DataFrame, run: RunRecord, *,
                     keep_own: bool = False) -> None:
    """Earlier scorings of this run's conversations with the same rule-set version, and their
    messages. ``keep_own``: the rows of ``run`` itself stay (RunWriter inserted them already; its
    run id is new to the store, so no older row carries it)."""
    own = " AND run_id <> ?" if keep_own else ""
    extra = [run.run_id] if keep_own else []
    with registered(con, "_run_ids", ids):
        for table in _RUN_TABLES:
            con.execute(f"DELETE FROM {table} WHERE ruleset_version = ?{own} AND conversation_id IN "
                        f"(SELECT conversation_id FROM _run_ids)", [run.ruleset_version, *extra])
        con.execute(f"DELETE FROM messages WHERE conversation_id IN (SELECT conversation_id FROM _run_ids){own}",
                    extra)


def _insert_conversations(con: duckdb.DuckDBPyConnection, run: RunRecord,
                          conversations: pd.DataFrame | FrameParts, n_ids: int) -> int:
    n = insert_joined(con, "conversations", conversations, None, S.CONVERSATION_ID, **_common(run),
                      scored_at=run.finished_at or datetime.now(UTC))
    if n != n_ids:
        raise BugError(f"write_run: {n} conversation rows for {n_ids} ids")
    return n


def _insert_rest(con: duckdb.DuckDBPyConnection, run: RunRecord, counts: dict[str, int],
                 conversation_kpis: pd.DataFrame | FrameParts, attribution: pd.DataFrame | None,
                 review_queue: pd.DataFrame) -> None:
    """KPI rows, review queue and the run record (its counts: ``counts``, completed here)."""
    common = _common(run)
    counts["conversation_kpis"] = insert_joined(con, "conversation_kpis", conversation_kpis, attribution,
                                                S.CONVERSATION_ID, **common)
    counts["review_queue"] = insert_frame(con, "review_queue", review_queue, **common)
    con.execute("DELETE FROM runs WHERE run_id = ?", [run.run_id])
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run.run_id, run.started_at, run.finished_at or datetime.now(UTC), run.status, run.ruleset_version,
         run.qa_version, json.dumps(list(run.inputs), ensure_ascii=False), run.out_dir, counts["conversations"],
         counts["messages"], counts["findings"], run.n_rejects, counts["review_queue"], ",".join(run.nights)],
    )


class RunWriter:
    """A run's store write spread over its scoring: each partition's messages, findings and score
    trace are inserted as its result arrives (``add``), in one transaction that ``finish``
    completes (earlier scorings of the night deleted, per-conversation tables, the run record) and
    commits. Readers see nothing before COMMIT; a crash or ``abort`` rolls everything back.

    For the pool engine: its client is idle while the workers score, and the inserts (~3 s per
    1M messages) no longer wait for the last partition. One DuckDB thread, as in write_run."""

    def __init__(self, con: duckdb.DuckDBPyConnection, run: RunRecord) -> None:
        self.con, self.run = con, run
        self.counts = {"messages": 0, "findings": 0, "score_trace": 0}
        if con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run.run_id]).fetchone()[0]:  # type: ignore[index]
            raise BugError(f"RunWriter: run {run.run_id} is already in the store (run ids are new per run)")
        self._threads = _one_thread(con)
        con.execute("BEGIN TRANSACTION")
        self.open = True

    def add(self, messages: Rows, findings: Rows, trace: Rows) -> None:
        if not self.open:
            raise BugError("RunWriter.add after finish/abort")
        self.counts["messages"] += insert_rows(self.con, "messages", messages, run_id=self.run.run_id)
        self.counts["findings"] += insert_rows(self.con, "findings", findings, **_common(self.run))
        self.counts["score_trace"] += insert_rows(self.con, "score_trace", trace, **_common(self.run))

    def finish(self, *, conversations: pd.DataFrame | FrameParts, conversation_kpis: pd.DataFrame | FrameParts,
               review_queue: pd.DataFrame, checkpoint: Checkpoint | None = None,
               attribution: pd.DataFrame | None = None, conversation_ids: pd.Series | None = None,
               run: RunRecord | None = None) -> dict[str, int]:
        """The rest of write_run_once and COMMIT (``run``: the record as it is now, e.g. with the
        night's dates and rejects, which are only known after the scoring)."""
        if not self.open:
            raise BugError("RunWriter.finish after finish/abort")
        if run is not None:
            if run.run_id != self.run.run_id or run.ruleset_version != self.run.ruleset_version:
                raise BugError("RunWriter.finish: another run than the one the rows were inserted for")
            self.run = run
        step = checkpoint or (lambda _s: None)
        ids = _run_ids(conversations, conversation_ids)
        counts = dict(self.counts)
        try:
            _delete_previous(self.con, ids, self.run, keep_own=True)
            step("deleted")
            counts["conversations"] = _insert_conversations(self.con, self.run, conversations, len(ids))
            step("inserted:conversations")
            step("inserted:findings")
            _insert_rest(self.con, self.run, counts, conversation_kpis, attribution, review_queue)
            step("commit")
            self.con.execute("COMMIT")
        except BaseException:
            self.abort()
            raise
        self.open = False
        self._restore()
        return counts

    def abort(self) -> None:
        """Roll back (idempotent; a connection whose COMMIT failed has no transaction left)."""
        if self.open:
            self.open = False
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:
                pass
            self._restore()

    def _restore(self) -> None:
        try:
            self.con.execute(f"SET threads = {self._threads}")
        except duckdb.Error:
            pass


def set_run_status(con: duckdb.DuckDBPyConnection, run_id: str, status: str) -> None:
    """Mark a recorded run (``stored`` → ``ok`` once its outputs and reports are written)."""
    con.execute("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, datetime.now(UTC), run_id])


def write_run_kpis(con: duckdb.DuckDBPyConnection, run_id: str, *, agents: pd.DataFrame,
                   shops: pd.DataFrame, checkpoint: Checkpoint | None = None) -> None:
    """The run's agent and shop KPI tables (replaced when the same run id is written again).
    ``checkpoint("kpis")`` is called inside the transaction, before COMMIT (crash tests)."""
    with transaction(con):
        for table, df in (("agent_kpis", agents), ("shop_kpis", shops)):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            insert_frame(con, table, df, run_id=run_id)
        if checkpoint is not None:
            checkpoint("kpis")


def count_rows(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = ("runs", "conversations", "messages", "findings", "score_trace", "conversation_kpis",
              "review_queue", "reviews", "outbox", "agent_kpis", "shop_kpis")
    return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}


def read_conversations(con: duckdb.DuckDBPyConnection, *, agent_id: str | None = None,
                       nights: Sequence[str] | None = None) -> pd.DataFrame:
    """Latest scoring of each conversation, with HUMAN_TOTAL / OVERRIDDEN / effective_total."""
    sql = "SELECT * FROM v_conversations WHERE 1=1"
    params: list[object] = []
    if agent_id is not None:
        sql += " AND agent_id = ?"
        params.append(agent_id)
    if nights:
        sql += f" AND night IN ({', '.join('?' for _ in nights)})"
        params.extend(nights)
    return con.execute(sql + " ORDER BY conversation_id", params).df()


def human_totals(con: duckdb.DuckDBPyConnection, conversation_ids: Sequence[str] | pd.Series, *,
                 every_id: bool = True) -> pd.Series:
    """The effective human override total (v_conversations.human_total) of the given conversations,
    indexed by id; NaN where none (``every_id=False``: only the overridden ids, which is what a
    nightly run keeps through its store write instead of 345k ids at 5M messages). Reads the
    reviews of those ids only, not the store's history. A Series of ids is used as it is."""
    given = conversation_ids if isinstance(conversation_ids, pd.Series) else pd.Series(list(conversation_ids),
                                                                                         dtype=object)
    ids = pd.DataFrame({S.CONVERSATION_ID: given.astype(str).drop_duplicates().reset_index(drop=True)})
    with registered(con, "_ids", ids):
        ov = con.execute(
            "SELECT conversation_id, total AS human_total FROM reviews WHERE override "
            "AND conversation_id IN (SELECT conversation_id FROM _ids) "
            "QUALIFY row_number() OVER (PARTITION BY conversation_id ORDER BY imported_at DESC, reviewer) = 1").df()
    found = ov.set_index(S.CONVERSATION_ID)[S.HUMAN_TOTAL].astype("float64").rename(S.HUMAN_TOTAL)
    return found.reindex(ids[S.CONVERSATION_ID]) if every_id else found[found.notna()]


def read_findings(con: duckdb.DuckDBPyConnection, conversation_ids: Sequence[str]) -> pd.DataFrame:
    """Findings of the latest scoring of the given conversations."""
    ids = pd.DataFrame({S.CONVERSATION_ID: list(conversation_ids)})
    with registered(con, "_ids", ids):
        return con.execute(
            "SELECT f.* FROM findings f JOIN v_conversations c USING (conversation_id, ruleset_version) "
            "WHERE f.conversation_id IN (SELECT conversation_id FROM _ids) "
            "ORDER BY f.conversation_id, f.message_index, f.rule_id").df()


def read_trace(con: duckdb.DuckDBPyConnection, conversation_ids: Sequence[str]) -> pd.DataFrame:
    ids = pd.DataFrame({S.CONVERSATION_ID: list(conversation_ids)})
    with registered(con, "_ids", ids):
        return con.execute(
            "SELECT t.* FROM score_trace t JOIN v_conversations c USING (conversation_id, ruleset_version) "
            "WHERE t.conversation_id IN (SELECT conversation_id FROM _ids) "
            "ORDER BY t.conversation_id, t.message_index, t.rule_id").df()


def agent_trend(db: Path | str | duckdb.DuckDBPyConnection, agent_id: str | None = None) -> pd.DataFrame:
    """Mean effective total per night and agent (latest scoring, overrides applied): night, agent_id,
    mean_total, n."""
    sql = ("SELECT night, agent_id, avg(effective_total) AS mean_total, count(*) AS n "
           "FROM v_conversations WHERE effective_total IS NOT NULL AND night IS NOT NULL")
    params: list[object] = []
    if agent_id is not None:
        sql += " AND agent_id = ?"
        params.append(agent_id)
    sql += " GROUP BY night, agent_id ORDER BY night, agent_id"
    if isinstance(db, duckdb.DuckDBPyConnection):
        return db.execute(sql, params).df()
    with open_store(db, read_only=True) as con:
        return con.execute(sql, params).df()
