"""The nightly audit: plan chunks → spill into conversation buckets → pass 1 → pass 2 → store →
outputs → reports.

The input is never held whole: chunks of the exports are spilled into buckets of whole
conversations (ingest.stream), and each bucket is a partition that the same ``process_partition``
scores in one process, a process pool or on a dask cluster (engines.py; each worker loads the
configuration once). Template rules need counts over the whole batch, hence two passes: pass 1
assembles and normalises each bucket and counts agent reply templates, pass 2 does the rest with
the merged counts. Results are spooled to disk; the store and the big outputs are written from the
spool by DuckDB. Seconds per stage (wall and CPU) go into run_summary.json. Other stages are
imported lazily so that a missing stage fails the run with a clear message instead of breaking
``import qa_inspect``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qa_inspect import __version__
from qa_inspect import schema as S
from qa_inspect.config import Shop, load_shops, resolve_rules_dir
from qa_inspect.errors import BugError, LockError, UserError
from qa_inspect.heap import release_memory
from qa_inspect.kpis import (
    ATTRIBUTION_COLUMNS,
    attribute_events,
    conversation_stats,
    events_frame,
    grouped_kpis,
)
from qa_inspect.safe_io import FORMULA_PREFIXES, neutralise_formula, write_csv_safe
from qa_inspect.scoring.conversations import build_conversations
from qa_inspect.scoring.scorecard import TRACE_COLUMNS, Scorecard, load_scorecard, score_conversations
from qa_inspect.selection import review_queue

LOCK_FILE = ".qa-inspect.lock"
CRASH_ENV = "QA_INSPECT_CRASH_AT"  # test-only fault injection, see crash_point
REPORTS_DIR = "reports"
SPOOL_PREFIX = ".spool-"  # DIR/.spool-<run id>/: partition results spilled during the run
_STAGING_PREFIXES = (".reports-staging.", ".reports-old.", SPOOL_PREFIX)
OUTPUT_FILES = tuple(f"{n}.{ext}" for n in ("conversations", "findings", "agents", "shops", "review_queue",
                                              "score_trace") for ext in ("csv", "parquet")) + (
    "messages.parquet", "rejects.csv", "run_summary.json")
AUTO_TOTAL = "auto_total"  # the scorecard's total when a human override replaced TOTAL in outputs
DEFAULT_PARTITION = 2000
BOM = "\ufeff"
DUCK_MEMORY = 256  # MB, DuckDB's limit per output copy (one at a time, after the store); streaming, no sort

ProgressFn = Callable[[str, int, int], None]
LogFn = Callable[[str], None]


# --------------------------------------------------------------------------- stage lookup
def stage(module: str, name: str) -> Any:
    """A stage function from another module; missing → BugError naming it (never a fake stage)."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BugError(f"pipeline stage '{module}.{name}' is not available: {exc}") from None
    fn = getattr(mod, name, None)
    if fn is None:
        raise BugError(f"pipeline stage '{module}.{name}' is not available ({module} has no '{name}')")
    return fn


# --------------------------------------------------------------------------- crash hook
def crash_point(point: str, key: object = None) -> None:
    """Test-only fault injection: SIGKILL this process at a named stage boundary.

    ``QA_INSPECT_CRASH_AT="<point>"`` kills at the first time ``point`` is reached,
    ``"<point>:<key>"`` only where the caller passes that key (a file name, a partition number), so
    tests hit every boundary deterministically without counters (no global state). Unset (always,
    outside tests) it costs one environment lookup.
    """
    want = os.environ.get(CRASH_ENV)
    if not want:
        return
    name, sep, k = want.partition(":")
    if name == point and (not sep or (key is not None and str(key) == k)):
        sys.stderr.flush()
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
        os._exit(137)  # pragma: no cover - only where SIGKILL does not exist


# --------------------------------------------------------------------------- files
def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write to a hidden temp file beside ``path``, then rename: readers see the old file or the new
    one, never half of one. A killed writer's temp file is removed by the next run (clean_stale)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        crash_point("before_rename", path.name)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Drop list columns (tokens) that CSV/Parquet consumers do not want."""
    return df.drop(columns=[c for c in (S.TOKENS,) if c in df.columns])


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """UTF-8 with BOM (Excel shows Chinese), spreadsheet formulas neutralised (chat text and ids
    come from customers), written to a temp file then renamed (safe_io.write_csv_safe)."""
    return write_csv_safe(_plain(df), path)


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    return _atomic(path, lambda p: _plain(df).to_parquet(p, index=False))


def clean_stale(out_dir: Path, names: Sequence[str], log: LogFn | None = None) -> list[Path]:
    """Remove what killed runs left behind in ``out_dir``: temp files of the run's outputs
    (``.<name>.*.tmp``, from _atomic or safe_io) and report staging folders. Call under the run
    lock only, so no live run's temp file is touched; other commands' files are left alone."""
    removed: list[Path] = []
    if not out_dir.is_dir():
        return removed
    for entry in out_dir.iterdir():
        n = entry.name
        if entry.is_dir() and n.startswith(_STAGING_PREFIXES):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_file() and n.endswith(".tmp") and any(n.startswith(f".{x}.") for x in names):
            entry.unlink(missing_ok=True)
        else:
            continue
        removed.append(entry)
    if removed and log:
        log(f"removed {len(removed)} temp file(s)/folder(s) left by an interrupted run in {out_dir}")
    return removed


# --------------------------------------------------------------------------- lock
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: O_EXCL lock file and pid check only
    fcntl = None  # type: ignore[assignment]

_START_SLACK_S = 2.0  # /proc start times have clock-tick/1 s resolution


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_started(pid: int) -> float | None:
    """Epoch seconds when ``pid`` started (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def holder_alive(info: dict[str, Any], host: str) -> bool:
    """Whether the run named in a lock file may still be running. Another host cannot be checked
    (assume alive); on this host the pid must exist AND have started before the lock was written,
    otherwise the pid was reused by an unrelated process after the run died."""
    if info.get("host") != host:
        return True
    try:
        pid = int(info.get("pid", -1) or -1)
    except (TypeError, ValueError):
        return False
    if pid <= 0 or not _pid_alive(pid):
        return False
    started = _process_started(pid)
    try:
        locked = datetime.fromisoformat(str(info.get("started"))).timestamp()
    except ValueError:
        return True
    return started is None or started <= locked + _START_SLACK_S


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _locked_error(out_dir: Path, path: Path, info: dict[str, Any]) -> LockError:
    return LockError(f"{out_dir} is locked by another qa-inspect run (pid {info.get('pid', '?')} on "
                     f"{info.get('host', '?')}, since {info.get('started', '?')}); wait for it to finish. "
                     f"If that run is dead on another host, remove {path}")


@contextmanager
def run_lock(out_dir: Path, log: LogFn | None = None) -> Iterator[Path]:
    """``DIR/.qa-inspect.lock`` so two runs never write one folder.

    The file holds pid, host and start time (for the message and for stale-lock detection). Where
    the OS has flock, the kernel lock on the open file is what excludes other runs: it dies with
    the process however the process dies (SIGKILL, OOM), so a crashed run's lock is simply taken
    over, and two runs racing to take over one stale lock cannot both win (an unlink-and-recreate
    scheme lets the slower one delete the faster one's fresh lock). Without flock, a lock whose pid
    is dead (or reused) on this host is taken over.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    host = socket.gethostname()
    me = {"pid": os.getpid(), "host": host, "started": datetime.now(UTC).isoformat()}
    fd = _acquire_flock(out_dir, path, host, log) if fcntl is not None else _acquire_excl(out_dir, path, host, log)
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode("utf-8"))
        os.fsync(fd)
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still holding the flock: a waiter re-checks the inode
        os.close(fd)


def _acquire_flock(out_dir: Path, path: Path, host: str, log: LogFn | None) -> int:
    assert fcntl is not None
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _locked_error(out_dir, path, _read_lock(path)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder finished and unlinked it between our open and flock: retry
            os.close(fd)
            continue
        info = _read_lock(path)
        if info and info.get("host") == host and holder_alive(info, host):
            os.close(fd)  # a live run that does not use flock (older qa-inspect): respect its lock
            raise _locked_error(out_dir, path, info)
        if info and log:
            log(f"taking over stale lock {path} (pid {info.get('pid')} on {info.get('host')}, started "
                f"{info.get('started')}, is not running)")
        return fd
    raise LockError(f"could not take the lock {path}: other runs keep replacing it")  # pragma: no cover


def _acquire_excl(out_dir: Path, path: Path, host: str, log: LogFn | None) -> int:  # pragma: no cover
    for _ in range(2):
        try:
            return os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            info = _read_lock(path)
            if holder_alive(info, host) and info:
                raise _locked_error(out_dir, path, info) from None
            if log:
                log(f"taking over stale lock {path} (pid {info.get('pid')} is not running)")
            path.unlink(missing_ok=True)
    raise LockError(f"could not take the lock {path}")


# --------------------------------------------------------------------------- context
@dataclass
class Context:
    """Everything a partition needs, loaded once per process. A ``light`` context (the client of a
    pool run) has the shops, scorecard, rule set and version but no knowledge bases, models or
    tokenizer: its workers load and validate those, and the client never scores a partition."""

    rules_dir: Path
    shops: dict[str, Shop]
    scorecard: Scorecard
    ruleset: Any
    kbs: dict[str, Any]
    models: Any
    thresholds: Any
    tokenizer: Any
    version: str = ""
    light: bool = False


def config_version(rules_dir: Path, ruleset_version: str, cards: Sequence[Path]) -> str:
    """Hash of everything that changes scores: rules, scorecard, models.yaml, knowledge, model cards."""
    h = hashlib.sha256(ruleset_version.encode())
    for p in sorted([rules_dir / "scorecard.yaml", rules_dir / "models.yaml", rules_dir / "shops.yaml",
                     *(rules_dir / "knowledge").rglob("*")]):
        if p.is_file():
            h.update(p.relative_to(rules_dir).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    for card in cards:
        h.update(b"card\0" + card.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def load_context(rules_dir: Path | str | None, models_dir: Path | str | None = None, *,
                 light: bool = False) -> Context:
    """``light``: without knowledge bases, models and tokenizer (~1.2 s less: no scikit-learn
    import), for a client whose workers load their own full context."""
    rd = resolve_rules_dir(rules_dir)
    mdir = Path(models_dir) if models_dir else None
    shops = load_shops(rd)
    scorecard = load_scorecard(rd)
    ruleset = stage("qa_inspect.ruleengine", "load_ruleset")(rd)
    cards = stage("qa_inspect.modeldirs", "card_files")(mdir)
    if light:
        ctx = Context(rd, shops, scorecard, ruleset, {}, None, None, None, light=True)
    else:
        kbs = stage("qa_inspect.knowledge", "load_knowledge")(rd)
        words = stage("qa_inspect.knowledge", "catalog_words")(kbs)
        models = stage("qa_inspect.models", "load_models")(mdir)
        thresholds = stage("qa_inspect.models", "load_thresholds")(rd)
        tokenizer = stage("qa_inspect.text.tokenize", "Tokenizer").from_rules(rd, extra_words=words)
        ctx = Context(rd, shops, scorecard, ruleset, kbs, models, thresholds, tokenizer)
    ctx.version = config_version(rd, str(getattr(ruleset, "version", "")), cards)
    return ctx


def light_context(ctx: Context) -> Context:
    """``ctx`` without what only the scoring needs (knowledge bases, models, tokenizer)."""
    return ctx if ctx.light else replace(ctx, kbs={}, models=None, thresholds=None, tokenizer=None, light=True)


# --------------------------------------------------------------------------- gc
@contextmanager
def quiet_gc() -> Iterator[None]:
    """While a run works, the loaded context (dictionaries, models, knowledge bases: millions of
    long-lived objects) is moved out of the collector's reach (gc.freeze), so full collections
    stop re-walking it (~8 % of the partition CPU measured on 100k messages). Thresholds stay: raising
    them let cyclic garbage pile up (+300 MB RSS over a 1M-message pass). Undone afterwards: tests
    and library callers share the process."""
    import gc

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def collect_frozen() -> None:
    """Free what became garbage among the objects ``quiet_gc`` froze (cycles among them are out of
    the collector's reach while frozen), then freeze what is still alive again."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()
    release_memory()


# --------------------------------------------------------------------------- partitions
def split_partitions(messages: pd.DataFrame, size: int = DEFAULT_PARTITION) -> list[pd.DataFrame]:
    """Groups of ``size`` whole conversations, sorted by conversation_id, seq."""
    if size < 1:
        raise UserError("partition size must be at least 1")
    m = messages.sort_values([S.CONVERSATION_ID, S.SEQ], kind="stable").reset_index(drop=True)
    ids = pd.unique(m[S.CONVERSATION_ID])
    if len(ids) == 0:
        return []
    rank = pd.Series(range(len(ids)), index=ids)
    part = m[S.CONVERSATION_ID].map(rank) // size
    return [g.reset_index(drop=True) for _, g in m.groupby(part, sort=True)]


class Partitions(Sequence[pd.DataFrame]):
    """Lazy ``split_partitions``: the sorted messages plus row ranges of ``size`` whole
    conversations; a partition is sliced only when an engine asks for it, so the night is held
    once (not once more as a list of partition copies)."""

    def __init__(self, messages: pd.DataFrame, size: int = DEFAULT_PARTITION) -> None:
        if size < 1:
            raise UserError("partition size must be at least 1")
        m = messages.sort_values([S.CONVERSATION_ID, S.SEQ], kind="stable").reset_index(drop=True)
        cid = m[S.CONVERSATION_ID].astype(object).to_numpy()
        starts = np.concatenate([[0], np.flatnonzero(cid[1:] != cid[:-1]) + 1]) if len(cid) else np.array([])
        cuts = [int(x) for x in starts[::size]] + [len(m)]
        self.messages = m
        self.bounds = [(cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1)] if len(cid) else []

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, i: int) -> pd.DataFrame:  # type: ignore[override]
        a, b = self.bounds[i]
        return self.messages.iloc[a:b].reset_index(drop=True)


CPU_PREFIX = "cpu:"


class StageTimer:
    """Seconds per stage, summed over calls. Plain data (picklable) so workers can send it back."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
            # CPU seconds of this process too (key "cpu:<stage>"): on a shared machine wall time
            # measures the neighbours, CPU time the work
            key = CPU_PREFIX + name
            self.seconds[key] = self.seconds.get(key, 0.0) + time.process_time() - c

    def add(self, seconds: dict[str, float]) -> None:
        for k, v in seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v


def prepare_partition(partition: pd.DataFrame, ctx: Context, timer: StageTimer | None = None, *,
                      count: bool = True) -> tuple[pd.DataFrame, Counter[str]]:
    """Normalise + tokenise (if not yet) and count reply templates (``count=False``: the caller has
    the batch's counts already; an empty Counter comes back)."""
    t = timer or StageTimer()
    p = partition
    if S.NORM_TEXT not in p.columns:
        with t("normalize"):
            p = stage("qa_inspect.text.normalize", "normalize")(p)
    if S.TOKENS not in p.columns:
        with t("tokenize"):
            p = stage("qa_inspect.text.tokenize", "tokenize")(p, ctx.tokenizer)
    if not count:
        return p, Counter()
    with t("template_counts"):
        counts = Counter(stage("qa_inspect.ruleengine", "template_counts")(p))
    return p, counts


@dataclass
class PartitionResult:
    conversations: pd.DataFrame  # scored: CONVERSATION_COLUMNS + NA_REASONS + N/A flags
    findings: pd.DataFrame  # FINDING_COLUMNS (after combine)
    trace: pd.DataFrame  # scorecard.TRACE_COLUMNS
    review_items: pd.DataFrame  # from models.combine
    stats: pd.DataFrame  # kpis.STATS_COLUMNS
    messages: pd.DataFrame  # the partition with NORM_TEXT (tokens dropped)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds spent on this partition
    spilled: dict[str, int] | None = None  # rows written to the spool per kind (the frames are then empty)


def _spooled_frames(r: PartitionResult) -> tuple[tuple[str, pd.DataFrame], ...]:
    """The rows a partition spools, each conversation's rows together (the stages emit rule findings
    before knowledge findings; a stable sort keeps each conversation's own order)."""
    return (("messages", _plain(r.messages)), ("findings", _by_conversation(r.findings)),
            ("trace", _by_conversation(r.trace)))


def spill_result(r: PartitionResult, folder: Path, index: int, shops: dict[str, Shop]) -> PartitionResult:
    """Write a result's rows to the spool and return it emptied. Workers that share the client's
    disk call it themselves (no pickling of a partition's rows through the pool, no Parquet
    encoding on the client); the client's ResultSpool calls it for results shipped back whole.

    Per-message and per-finding rows go to Parquet (DuckDB reads them). The per-conversation
    frames go to pickles (exact dtypes) that the client concatenates once at the end: holding
    hundreds of small frames through pass 2 cost ~4x their size in RSS (heap fragmentation:
    +160 MB at 5M messages)."""
    events = events_frame(r.messages, shops)
    r.spilled = {}
    for name, df in _spooled_frames(r):
        r.spilled[name] = 0
        if df is not None and len(df):
            # scratch files read once or twice on this machine: no compression, no statistics (a
            # quarter of the encoding CPU; nothing filters on them)
            _atomic(folder / name / f"part-{index:06d}.parquet",
                    lambda p, d=df: d.to_parquet(p, index=False, compression=None, write_statistics=False))
            r.spilled[name] = len(df)
    for name, df in (("conversations", r.conversations), ("review_items", r.review_items), ("stats", r.stats),
                     ("events", events)):
        r.spilled[name] = len(df)
        _dump(df, folder / name / f"part-{index:06d}.pkl")
    r.messages, r.findings, r.trace = S.empty_messages(), S.empty_findings(), pd.DataFrame()
    r.conversations = r.review_items = r.stats = pd.DataFrame()
    return r


def process_partition(partition: pd.DataFrame, ctx: Context,
                      template_counts: Counter[str] | None = None,
                      timer: StageTimer | None = None) -> PartitionResult:
    """Every per-conversation stage on one partition of whole conversations.

    ``template_counts``: reply-template counts merged over the whole batch (pass 1); None uses
    this partition's own counts (fine when the partition is the whole batch). ``timer``
    accumulates seconds per stage (the result's ``seconds`` holds this call's share).
    """
    if ctx.light:
        raise BugError("process_partition: a light context (pool client) cannot score partitions")
    t = StageTimer()
    if template_counts is not None and S.NORM_TEXT in partition.columns and S.TOKENS in partition.columns:
        p, counts = partition, template_counts  # prepared in pass 1: nothing to redo
    else:
        p, own = prepare_partition(partition, ctx, t, count=template_counts is None)
        counts = template_counts if template_counts is not None else own
    with t("rules"):  # one pass: the per-conversation and the template rules share the split
        rule_f, tmpl_f = stage("qa_inspect.ruleengine", "apply_all_rules")(p, ctx.ruleset, counts, ctx.shops)
    with t("knowledge"):
        kb_f = stage("qa_inspect.knowledge", "verify_knowledge")(p, ctx.kbs)
    with t("models"):  # the act features computed for the acts are reused for the findings' evidence
        acts, act_x = stage("qa_inspect.models", "predict_acts_with_features")(p, ctx.models)
        model_f = stage("qa_inspect.models", "act_findings")(p, acts, ctx.models, ctx.thresholds, act_x)
    with t("combine"):
        frames = [f for f in (rule_f, tmpl_f) if f is not None and len(f)]
        base_f = pd.concat(frames, ignore_index=True) if frames else S.empty_findings()
        combined, review_items = stage("qa_inspect.models.combine", "combine")(base_f, model_f, acts,
                                                                               ctx.thresholds)
        # Knowledge findings are checked against the catalogue, not guessed: they bypass the
        # rule/model combination (combine's contract: knowledge findings pass through).
        frames = [f for f in (combined, kb_f) if f is not None and len(f)]
        findings = pd.concat(frames, ignore_index=True) if frames else S.empty_findings()
    with t("models"):
        risk = stage("qa_inspect.models", "predict_risk")(p, acts, findings, ctx.models)
    with t("score"):
        conv = build_conversations(p, ctx.shops, ctx.scorecard.presale_intent_words)
        if risk is not None and len(risk):
            r = risk.set_index(S.CONVERSATION_ID)[S.RISK]
            conv[S.RISK] = conv[S.CONVERSATION_ID].map(r).astype("float64")
        veto_rules = {r.id for r in getattr(ctx.ruleset, "rules", []) if getattr(r, "veto", False)}
        scores, trace = score_conversations(conv, findings, ctx.scorecard, ctx.shops, veto_rules=veto_rules)
    with t("kpis"):
        stats = conversation_stats(p, conv, ctx.shops, slow_reply_s=ctx.scorecard.slow_reply_seconds)
    n_in = partition[S.CONVERSATION_ID].nunique()
    if len(scores) != n_in:
        raise BugError(f"process_partition: {n_in} conversations in, {len(scores)} scored")
    if timer is not None:
        timer.add(t.seconds)
    return PartitionResult(scores, findings, trace, review_items, stats, _plain(p), dict(t.seconds))


# --------------------------------------------------------------------------- progress
class Reporter:
    """Progress bar on a terminal, plain timestamped log lines otherwise (cron)."""

    def __init__(self, stream: IO[str] | None = None, *, tty: bool | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.quiet = quiet
        self._last = ""

    def log(self, msg: str) -> None:
        if self.quiet:
            return
        if self.tty and self._last:
            self.stream.write("\n")
            self._last = ""
        stamp = "" if self.tty else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ ")
        self.stream.write(f"{stamp}{msg}\n")
        self.stream.flush()

    def progress(self, what: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.tty:
            width = 30
            filled = int(width * done / total) if total else width
            self._last = what
            self.stream.write(f"\r{what:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            if done >= total:
                self.stream.write("\n")
                self._last = ""
            self.stream.flush()
        elif done >= total or done == 1 or done % 10 == 0:
            self.log(f"{what}: {done}/{total} {'input chunks' if what == 'ingest' else 'partitions'}")


# --------------------------------------------------------------------------- spool
SPOOLED = ("messages", "findings", "trace")  # per-message/per-finding rows: spilled to Parquet
PER_CONVERSATION = ("conversations", "review_items", "stats", "events")  # spilled as pickles


class ResultSpool:
    """The engine's sink on the client: every row of each partition result goes to the spool at
    once (see spill_result): ``<folder>/<name>/part-<i>.parquet`` for messages with norm_text,
    findings and the score trace, ``.pkl`` for the per-conversation frames (scores, KPI stats,
    review items, order/payment events). The store and the output files are then written from
    the spool file by file, so client memory does not grow with the number of messages.
    """

    def __init__(self, folder: Path, shops: dict[str, Shop], timer: StageTimer | None = None) -> None:
        self.folder = folder
        self.shops = shops
        self.timer = timer or StageTimer()
        self.rows: dict[str, int] = dict.fromkeys((*SPOOLED, *PER_CONVERSATION), 0)
        self.on_part: Callable[[int], None] | None = None  # called with each spooled part's index
        shutil.rmtree(folder, ignore_errors=True)
        for name in (*SPOOLED, *PER_CONVERSATION):
            (folder / name).mkdir(parents=True)

    def __call__(self, index: int, r: PartitionResult) -> None:
        with self.timer("merge"):
            if r.spilled is None:  # a result shipped back whole (dask): spool its rows here
                spill_result(r, self.folder, index, self.shops)
            if r.spilled is None or any(name not in r.spilled for name in PER_CONVERSATION):
                raise BugError(f"partition {index}: result not spooled")
            for name in self.rows:
                self.rows[name] += r.spilled.get(name, 0)
        if self.on_part is not None:
            self.on_part(index)

    def files(self, name: str) -> list[Path]:
        return sorted((self.folder / name).glob("part-*.parquet"))

    def part_files(self, name: str, index: int) -> list[Path]:
        """The Parquet part of one partition (none when it had no such rows)."""
        f = self.folder / name / f"part-{index:06d}.parquet"
        return [f] if f.exists() else []

    def frame_files(self, name: str) -> list[Path]:
        return sorted((self.folder / name).glob("part-*.pkl"))

    def frame(self, name: str, empty: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One per-conversation frame of all partitions, in partition order; only ``columns`` (taken
        part by part, so the other columns are never held for the whole night) when given."""
        cols = None if columns is None else list(columns)
        parts = [_load(f) if cols is None else _load(f)[cols] for f in self.frame_files(name)]
        return _concat(parts, empty if cols is None else empty.reindex(columns=cols))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def spooled_schema(files: Sequence[Path], columns: Sequence[str] | None = None) -> pa.Schema:
    """One Arrow schema for all parts (a column that is all-null in one partition is typed by the
    others), restricted to ``columns`` in that order when given."""
    schema = pa.unify_schemas([pq.read_schema(f).remove_metadata() for f in files], promote_options="permissive")
    if columns is not None:
        schema = pa.schema([schema.field(c) if c in schema.names else pa.field(c, pa.null()) for c in columns])
    return schema


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_FIRST_CHARS = ", ".join(f"chr({ord(c)})" for c in FORMULA_PREFIXES)  # SQL list of the formula starts


def _duck_parts(files: Sequence[Path], columns: Sequence[str] | None, order_by: Sequence[str], csv: bool,
                target: Path, spill: Path | None = None) -> None:
    """COPY the concatenated parts to ``target`` with DuckDB (C++, streaming, spills to disk when
    sorting): Parquet as typed, or CSV written exactly as pandas' to_csv writes the concatenated
    frame through write_csv_safe (BOM, CRLF, formulas neutralised, an int column with a null
    anywhere as float, True/False) at a third of the CPU. ``order_by``: sort keys, ties in part
    then row order, so outputs do not depend on the partition layout."""
    import duckdb

    schema = spooled_schema(files, columns)
    present = set(spooled_schema(files).names)
    nullable: set[str] = set()
    if csv:
        for fl in schema:
            if pa.types.is_integer(fl.type) and any(
                    pq.read_table(f, columns=[fl.name]).column(0).null_count
                    for f in files if fl.name in pq.read_schema(f).names):
                nullable.add(fl.name)
    sel: list[str] = []
    for i, fl in enumerate(schema):
        c, col = fl.name, _q(fl.name)
        if c not in present:
            e = "NULL"
        elif csv and (pa.types.is_string(fl.type) or pa.types.is_large_string(fl.type)):
            # pandas writes '' and null alike (empty); formulas get a leading apostrophe
            # the first character against FORMULA_PREFIXES: a seventh less CPU than the regex
            e = (f"CASE WHEN {col} = '' THEN NULL WHEN left({col}, 1) IN ({_FIRST_CHARS}) AND "
                 f"{col} NOT IN ('+', '-') THEN '''' || {col} ELSE {col} END")
        elif csv and pa.types.is_boolean(fl.type):
            e = f"CASE WHEN {col} THEN 'True' WHEN NOT {col} THEN 'False' END"
        elif c in nullable:
            e = f"CAST({col} AS DOUBLE)"
        else:
            e = col
        name = str(neutralise_formula(c)) if csv else c
        sel.append(f"{e} AS {_q(BOM + name if csv and i == 0 else name)}")
    listing = "[" + ", ".join(_sql_text(str(f)) for f in files) + "]"
    keys = [_q(k) for k in order_by if k in present]
    if keys:  # ties in part then row order
        sql = (f"SELECT {', '.join(sel)} FROM read_parquet({listing}, union_by_name = true, filename = true, "
               f"file_row_number = true) ORDER BY {', '.join([*keys, 'filename', 'file_row_number'])}")
    else:  # parts in the given order, rows as written (DuckDB preserves insertion order): a stream
        sql = f"SELECT {', '.join(sel)} FROM read_parquet({listing}, union_by_name = true)"
    opts = "HEADER, DELIMITER ',', NEW_LINE '\\r\\n'" if csv else "FORMAT parquet"
    # A memory cap keeps the run's RSS predictable; an operator that cannot spill under it (odd
    # data: huge texts) gets a larger one rather than failing the night.
    for mb in (DUCK_MEMORY, DUCK_MEMORY * 4, DUCK_MEMORY * 16):
        # one thread: the COPY keeps partition order, and with several threads DuckDB buffers the
        # batches that finish out of order (5M messages, findings.csv: +141 MB and 4.4 s with one
        # thread, +323 MB and 13.2 s with two on this 2-core machine)
        config: dict[str, Any] = {"memory_limit": f"{mb}MB", "threads": 1}
        if spill is not None:
            config["temp_directory"] = str(spill)
        con = duckdb.connect(config=config)
        try:
            con.execute(f"COPY ({sql}) TO {_sql_text(str(target))} ({opts})")
            break
        except duckdb.OutOfMemoryException:
            if mb == DUCK_MEMORY * 16:
                raise
        finally:
            con.close()
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet_parts(files: Sequence[Path], columns: Sequence[str] | None, path: Path,
                        order_by: Sequence[str] = (), spill: Path | None = None) -> Path:
    """Concatenate spooled parts into one Parquet file (DuckDB, streaming), atomically."""
    return _atomic(path, lambda tmp: _duck_parts(files, columns, order_by, False, tmp, spill))


def write_csv_parts(files: Sequence[Path], columns: Sequence[str] | None, path: Path,
                    order_by: Sequence[str] = (), spill: Path | None = None) -> Path:
    """The CSV of the concatenated parts (DuckDB, streaming), atomically: byte for byte what
    write_csv_safe writes for the concatenated frame."""
    return _atomic(path, lambda tmp: _duck_parts(files, columns, order_by, True, tmp, spill))


# --------------------------------------------------------------------------- streaming ingest + scoring
MSGS_PER_CONVERSATION = 15  # bucket sizing guess (sample logs 13.4, benchmark 14.6 messages per chat)
MAX_BUCKETS = 4096  # caps the spill files (chunks x buckets) for tiny --partition-size values


def chunk_size(paths: Sequence[Path | str], engine: str, workers: int) -> int:
    """Bytes per input chunk: 32 MB (ingest.stream.CHUNK_BYTES) in one process; with workers, small
    enough for at least 4 chunks per worker (down to 4 MB), so the ingest phase is balanced."""
    st = importlib.import_module("qa_inspect.ingest.stream")
    if engine == "local":
        return int(st.CHUNK_BYTES)
    files = importlib.import_module("qa_inspect.ingest.core").collect_files([Path(p) for p in paths])
    total = sum(f.stat().st_size for f in files)
    return int(min(st.CHUNK_BYTES, max(4 << 20, total // (4 * max(1, workers)))))


def bucket_count(records: int, partition_size: int) -> int:
    """Buckets (= partitions) for about ``partition_size`` conversations each, from the planned
    record count: conversations are only known after the buckets are assembled."""
    if partition_size < 1:
        raise UserError("partition size must be at least 1")
    return int(min(MAX_BUCKETS, max(1, -(-max(records, 1) // (partition_size * MSGS_PER_CONVERSATION)))))


@dataclass(frozen=True)
class SpillItem:
    ref: Any  # ingest.stream.ChunkRef
    spill: str
    n_buckets: int


@dataclass(frozen=True)
class BucketItem:
    spill: str
    bucket: int
    gap: float
    rows: int  # rows the chunks reported for this bucket: a lost spill file is a bug, not a short night


@dataclass
class Prepared:
    """Pass 1 of one bucket: reply-template counts and duplicate-row rejects."""

    bucket: int
    counts: Counter[str]
    duplicates: pd.DataFrame


@dataclass
class StreamedIngest:
    """What the run knows of its input without holding it: per-file accounting, rejects (chunk
    rejects plus duplicates found per bucket), the non-empty buckets and their staged rows."""

    files: list[Any]
    rejects: pd.DataFrame
    buckets: list[int]
    spill: Path
    rows: dict[int, int] = field(default_factory=dict)  # staged rows per bucket
    gap: float = 10.0
    partitions: int = 0


def _assembled(spill: str | Path, bucket: int) -> Path:
    return Path(spill) / "assembled" / f"b{bucket:05d}.pkl"


def _dump(df: pd.DataFrame, path: Path) -> None:
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(df, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _load(path: Path) -> pd.DataFrame:
    import pickle

    with open(path, "rb") as fh:
        return pickle.load(fh)


def spill_task(item: SpillItem, ictx: Any, ctx: Context, timer: StageTimer) -> Any:
    """Engine task: parse one input chunk and spill its rows into buckets of whole conversations."""
    with timer("ingest"):
        return stage("qa_inspect.ingest.stream", "spill_chunk")(item.ref, ictx, item.spill, item.n_buckets)


def _count(p: pd.DataFrame, timer: StageTimer) -> tuple[pd.DataFrame, Counter[str]]:
    with timer("normalize"):
        p = stage("qa_inspect.text.normalize", "normalize")(p)
    with timer("template_counts"):
        return p, Counter(stage("qa_inspect.ruleengine", "template_counts")(p))


def prepare_task(item: BucketItem | pd.DataFrame, shared: Any, ctx: Context, timer: StageTimer) -> Prepared:
    """Pass 1. A BucketItem (shared disk): assemble the bucket (duplicates, sessions, seq), normalise,
    count reply templates, keep the normalised bucket for pass 2. A frame (dask): count only."""
    if isinstance(item, pd.DataFrame):
        return Prepared(-1, _count(item, timer)[1], S.empty_rejects())
    with timer("ingest"):
        msgs, dups = _load_bucket(item)
    p, counts = _count(msgs, timer)
    with timer("ingest"):
        _dump(p, _assembled(item.spill, item.bucket))
    return Prepared(item.bucket, counts, dups)


def _load_bucket(item: BucketItem) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bucket's messages (duplicates dropped, sessions, seq, agents) and its duplicate rejects."""
    return stage("qa_inspect.ingest.stream", "load_bucket")(item.spill, item.bucket, item.gap, expected_rows=item.rows)


@dataclass(frozen=True)
class ScoreItem:
    assembled: str  # the bucket after pass 1
    spool: str  # ResultSpool folder: the worker writes its parts there
    index: int  # part number (delivery order)


def score_task(item: ScoreItem | pd.DataFrame, counts: Counter[str], ctx: Context,
               timer: StageTimer) -> PartitionResult:
    """Pass 2: every per-conversation stage on one bucket (on shared disk: read it and spool the
    result's rows there; otherwise the shipped frame, rows go back to the client)."""
    frame = item
    if isinstance(item, ScoreItem):
        with timer("ingest"):
            frame = _load(Path(item.assembled))
    res = process_partition(frame, ctx, counts, timer)
    if isinstance(item, ScoreItem):
        with timer("merge"):
            spill_result(res, Path(item.spool), item.index, ctx.shops)
    res.seconds = dict(timer.seconds)
    return res


class _ClientBuckets(Sequence[pd.DataFrame]):
    """For engines without the client's disk (dask): the client assembles each bucket and ships the
    frame; pass 2 ships the same frame again from the client's copy."""

    def __init__(self, ingest: StreamedIngest, timer: StageTimer) -> None:
        self.ingest, self.timer = ingest, timer
        self.duplicates: list[pd.DataFrame] = []

    def __len__(self) -> int:
        return len(self.ingest.buckets)

    def __getitem__(self, i: int) -> pd.DataFrame:  # type: ignore[override]
        b = self.ingest.buckets[i]
        with self.timer("ingest"):
            msgs, dups = _load_bucket(BucketItem(str(self.ingest.spill), b, self.ingest.gap, self.ingest.rows[b]))
            _dump(msgs, _assembled(self.ingest.spill, b))
        self.duplicates.append(dups)
        return msgs


class _ClientAssembled(Sequence[pd.DataFrame]):
    def __init__(self, ingest: StreamedIngest) -> None:
        self.ingest = ingest

    def __len__(self) -> int:
        return len(self.ingest.buckets)

    def __getitem__(self, i: int) -> pd.DataFrame:  # type: ignore[override]
        return _load(_assembled(self.ingest.spill, self.ingest.buckets[i]))


def stream_ingest(session: Any, plan: Any, spill: Path, n_buckets: int, rep: Reporter, timer: StageTimer,
                  wall: dict[str, float], paths: Sequence[Path | str]) -> StreamedIngest:
    """Phase 0: every input chunk parsed and spilled into ``n_buckets`` buckets keyed by
    conversation (workers do it where they share the disk, else the client). Nothing of the night
    stays in memory but rejects and counts."""
    st = importlib.import_module("qa_inspect.ingest.stream")
    t0 = time.perf_counter()
    n = len(plan.chunks)
    items = [SpillItem(ref, str(spill), n_buckets) for ref in plan.chunks]
    summaries = []
    if session.shared_files:
        for i, res in enumerate(session.map(spill_task, items, plan.ictx), 1):
            summaries.append(res)
            rep.progress("ingest", i, n)
    else:
        for i, item in enumerate(items, 1):
            summaries.append(spill_task(item, plan.ictx, None, timer))  # type: ignore[arg-type]
            rep.progress("ingest", i, n)
    files = st.merge_file_infos(plan, summaries)
    rejects = st.chunk_rejects(summaries)
    rows: Counter[int] = Counter()
    for summ in summaries:
        rows.update(summ.rows_per_bucket)
    buckets = sorted(rows)
    wall["ingest"] = wall.get("ingest", 0.0) + time.perf_counter() - t0
    if not buckets:
        raise st.no_usable_messages([f.path for f in files] or list(map(str, paths)), rejects)
    return StreamedIngest(files=files, rejects=rejects, buckets=buckets, spill=spill, rows=dict(rows))


def score_buckets(session: Any, ingest: StreamedIngest, ctx: Context, rep: Reporter, sink: ResultSpool,
                  wall: dict[str, float]) -> Any:
    """Pass 1 (assemble + template counts per bucket), merge counts, pass 2 (score) to ``sink``."""
    from qa_inspect.engines import merge_counts

    st = importlib.import_module("qa_inspect.ingest.stream")
    n = len(ingest.buckets)
    spool_dir = sink.folder
    t0 = time.perf_counter()
    per_bucket: list[Counter[str]] = []
    dups: list[pd.DataFrame] = []
    assembled: Sequence[Any]
    if session.shared_files:
        items: Sequence[Any] = [BucketItem(str(ingest.spill), b, ingest.gap, ingest.rows[b]) for b in ingest.buckets]
        assembled = [ScoreItem(str(_assembled(ingest.spill, b)), str(spool_dir), k)
                     for k, b in enumerate(ingest.buckets)]
    else:
        items = _ClientBuckets(ingest, StageTimer())
        assembled = _ClientAssembled(ingest)
    for i, prep in enumerate(session.map(prepare_task, items), 1):
        per_bucket.append(prep.counts)
        dups.append(prep.duplicates)
        rep.progress("prepare", i, n)
    if isinstance(items, _ClientBuckets):
        dups = items.duplicates
        session.run.stage_seconds["ingest"] = (session.run.stage_seconds.get("ingest", 0.0)
                                               + items.timer.seconds.get("ingest", 0.0))
    counts = merge_counts(per_bucket)
    del per_bucket
    dup = _concat(dups, S.empty_rejects())
    if len(dup):
        st.fold_duplicates(ingest.files, dup)
        ingest.rejects = pd.concat([ingest.rejects, dup], ignore_index=True)
    t1 = time.perf_counter()
    for i, res in enumerate(session.map(score_task, assembled, counts), 1):
        sink(i - 1, res)
        session.run.delivered += 1
        crash_point("partition" if session.name == "local" else f"{session.name}_partition", i)
        rep.progress("score", i, n)
    if session.run.delivered != n:
        raise BugError(f"engine {session.name}: {n} partitions in, {session.run.delivered} results")
    ingest.partitions = n
    wall.update({"pass1": t1 - t0, "pass2": time.perf_counter() - t1})
    return session.run


# --------------------------------------------------------------------------- run
@dataclass
class RunSummary:
    run_id: str
    out_dir: Path
    db: Path
    ruleset_version: str
    files: int = 0
    messages: int = 0
    rejects: int = 0
    conversations: int = 0
    findings: int = 0
    review_items: int = 0
    vetoes: int = 0
    mean_total: float = float("nan")
    nights: list[str] = field(default_factory=list)
    seconds: float = 0.0
    engine: str = "local"
    workers: int = 1
    partitions: int = 0
    context_loads: int = 0  # contexts loaded inside workers (pool/dask): one per worker, not per partition
    # seconds per stage; partition stages are summed over partitions (in a pool or on dask:
    # worker-side time, which can exceed the wall time)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU seconds of the same stages
    wall_seconds: dict[str, float] = field(default_factory=dict)  # the client's clock per phase
    outputs: dict[str, str] = field(default_factory=dict)
    reports: str | None = None

    def text(self) -> str:
        return (f"run {self.run_id}: {self.files} files, {self.messages} messages ({self.rejects} rejected rows), "
                f"{self.conversations} conversations, {self.findings} findings, {self.vetoes} vetoes, "
                f"mean total {self.mean_total:.1f}, {self.review_items} review-queue rows; nights "
                f"{', '.join(self.nights) or '-'}; {self.seconds:.1f}s; outputs in {self.out_dir}; store {self.db}")

    def stage_text(self) -> str:
        """One plain line: seconds per stage, then the wall clock per phase."""
        stages = " ".join(f"{k} {v:.2f}" for k, v in ordered(self.stage_seconds).items())
        wall = " ".join(f"{k} {v:.2f}" for k, v in self.wall_seconds.items())
        where = "" if self.engine == "local" else (f" (partition stages summed over {self.workers} workers, "
                                                   f"context loaded {self.context_loads}x)")
        cpu = " ".join(f"{k} {v:.2f}" for k, v in ordered(self.stage_cpu_seconds).items())
        return (f"stage seconds [{self.engine}, {self.partitions} partitions]{where}: {stages}; "
                f"wall: {wall}" + (f"; CPU: {cpu}" if cpu else ""))


STAGE_ORDER = ("config", "ingest", "partition", "normalize", "tokenize", "template_counts", "rules", "knowledge",
               "models", "combine", "score", "kpis", "merge", "store", "outputs", "reports")


def ordered(seconds: dict[str, float]) -> dict[str, float]:
    """Stages in pipeline order (unknown ones last), rounded for the JSON summary."""
    keys = [k for k in STAGE_ORDER if k in seconds] + sorted(k for k in seconds if k not in STAGE_ORDER)
    return {k: round(seconds[k], 4) for k in keys}


def _concat(frames: Sequence[pd.DataFrame], empty: pd.DataFrame) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty


def _by_conversation(df: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by conversation id (stable: a conversation's own rows keep their order)."""
    if S.CONVERSATION_ID not in df.columns or len(df) < 2:
        return df
    return df.sort_values(S.CONVERSATION_ID, kind="stable").reset_index(drop=True)


class StreamingStore:
    """The pool engine's store write during the scoring (store.RunWriter): each partition's
    messages, findings and trace go into the open transaction as its result is spooled, while the
    workers score the next ones; the client's store phase after the scoring shrinks to the
    per-conversation tables and COMMIT. The store file stays locked by this run meanwhile.

    A night that outgrows the connection's memory cap is not retried here: the writer is rolled
    back and ``_finish`` writes the whole night from the spool with write_run (which retries with
    larger caps)."""

    def __init__(self, db_path: Path, run: Any, spool: ResultSpool, timer: StageTimer) -> None:
        from qa_inspect import store

        self.store, self.spool, self.timer = store, spool, timer
        self.con: Any = store.connect(db_path)
        try:
            self.writer: Any = store.RunWriter(self.con, run)
        except BaseException:
            self.con.close()
            raise

    def add(self, index: int) -> None:
        if self.writer is None:
            return
        import duckdb

        parts = [self.store.ParquetParts(self.spool.part_files(name, index)) for name in SPOOLED]
        with self.timer("store"):
            try:
                self.writer.add(*parts)
            except duckdb.Error as exc:
                if not self.store.out_of_memory(exc):
                    raise
                self.writer.abort()  # the whole night is written after the scoring instead
                self.writer = None

    def close(self) -> None:
        """Roll back what was not finished and release the store file (idempotent)."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        if self.con is not None:
            self.con.close()
            self.con = None


def run_audit(paths: Sequence[Path | str], out_dir: Path | str, *, rules_dir: Path | str | None = None,
              models_dir: Path | str | None = None, db: Path | str | None = None, workers: int = 1,
              partition_size: int = DEFAULT_PARTITION, reporter: Reporter | None = None,
              render: bool = True, engine: str | None = None, dask_address: str | None = None) -> RunSummary:
    """The nightly run. Returns a summary; raises UserError (bad input), UsageError (engine options
    that contradict each other) or BugError.

    ``engine``: ``local``, ``pool`` or ``dask`` (engines.ENGINES); None picks dask when
    ``dask_address`` is given, pool when ``workers`` > 1, else local.
    """
    from qa_inspect.engines import EngineOptions, open_session, resolve_engine, start_pool

    t0 = time.monotonic()
    rep = reporter or Reporter(quiet=True)
    opts = EngineOptions(workers=workers, dask_address=dask_address,
                         models_dir=Path(models_dir) if models_dir else None)
    engine_name = resolve_engine(engine, opts)
    out = Path(out_dir)
    db_path = Path(db) if db else out / "qa.duckdb"
    started = datetime.now(UTC)
    run_id = started.strftime("%Y%m%dT%H%M%SZ") + "-" + hashlib.sha1(
        f"{os.getpid()}{time.time_ns()}".encode()).hexdigest()[:6]
    timer = StageTimer()
    wall: dict[str, float] = {}
    with ExitStack() as stack:
        pool = None
        if engine_name == "pool":  # workers load their context while this process loads its own
            # before the run lock: forked workers would hold the lock's open file (a flock) too
            pool = start_pool(resolve_rules_dir(rules_dir), opts)
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        stack.enter_context(run_lock(out, rep.log))
        crash_point("locked")
        clean_stale(out, OUTPUT_FILES, rep.log)
        _check_store_writable(db_path)  # fail before the scoring work, not after it
        rep.log("loading configuration, knowledge and models")
        with timer("config"):
            # the pool's workers load (and validate) knowledge, models and dictionary themselves
            ctx = load_context(rules_dir, models_dir, light=engine_name == "pool")
        stack.enter_context(quiet_gc())
        crash_point("config")
        rep.log(f"ingesting {len(paths)} path(s)")
        with timer("ingest"):
            plan = stage("qa_inspect.ingest.stream", "plan_chunks")(
                list(paths), rules_dir=ctx.rules_dir, chunk_bytes=chunk_size(paths, engine_name, workers))
        n_buckets = bucket_count(plan.records_estimate, partition_size)
        wall.update({k: v for k, v in timer.seconds.items() if not k.startswith(CPU_PREFIX)})
        spool = ResultSpool(out / f"{SPOOL_PREFIX}{run_id}", ctx.shops, timer)
        session = None
        try:
            session = open_session(engine_name, ctx, opts, pool)
            rep.log(f"{len(plan.chunks)} input chunk(s) into up to {n_buckets} partition(s) of about "
                    f"{partition_size} conversations, engine {engine_name}"
                    + (f", {session.run.workers} worker(s)" if engine_name != "local" else "")
                    + (f" at {dask_address}" if engine_name == "dask" else ""))
            ingest = stream_ingest(session, plan, spool.folder / "ingest", n_buckets, rep, timer, wall, paths)
            crash_point("ingest")
            streaming = None
            if engine_name == "pool":  # the client is idle while the workers score: it stores meanwhile
                from qa_inspect import store

                streaming = StreamingStore(db_path, store.RunRecord(
                    run_id=run_id, started_at=started, ruleset_version=ctx.version, qa_version=__version__,
                    inputs=[str(p) for p in paths], out_dir=str(out), status="stored"), spool, timer)
                stack.callback(streaming.close)
                spool.on_part = streaming.add
            ran = score_buckets(session, ingest, ctx, rep, spool, wall)
            crash_point("engine")
            timer.add(ran.stage_seconds)
            # knowledge bases, models and tokenizer are garbage now (~80 MB at -j 1): freed before the
            # store, KPIs and reports, whose memory comes on top of what this process still holds
            ctx = session.ctx = light_context(ctx)
            collect_frozen()
            n = ingest.partitions
            # pool workers are idle now: they write the big output files while this process does
            # the KPIs and the store (the local and dask engines use a thread here)
            copier = getattr(session, "pool", None) if engine_name == "pool" else None
            summary = _finish(spool, ingest, ctx, run_id=run_id, started=started, out=out, db_path=db_path,
                              paths=paths, rep=rep, render=render, timer=timer, wall=wall, copier=copier,
                              streaming=streaming)
        finally:
            if session is not None:
                session.close()
            spool.remove()
        summary.files = len(getattr(ingest, "files", []) or [])
        summary.engine, summary.workers, summary.partitions = engine_name, ran.workers, n
        summary.context_loads = ran.context_loads
        summary.stage_seconds = ordered({k: v for k, v in timer.seconds.items() if not k.startswith(CPU_PREFIX)})
        summary.stage_cpu_seconds = ordered({k[len(CPU_PREFIX):]: v for k, v in timer.seconds.items()
                                             if k.startswith(CPU_PREFIX)})
        summary.seconds = time.monotonic() - t0
        wall["total"] = summary.seconds
        summary.wall_seconds = {k: round(v, 4) for k, v in wall.items()}
        _atomic(out / "run_summary.json", lambda p: p.write_text(json.dumps(
            {k: (str(v) if isinstance(v, Path) else v) for k, v in summary.__dict__.items()},
            ensure_ascii=False, indent=2, default=str), encoding="utf-8"))
        crash_point("summary")
        from qa_inspect import store

        with store.open_store(db_path) as con:
            store.set_run_status(con, run_id, "ok")  # outputs and reports are complete
        crash_point("done")
    return summary


def _check_store_writable(db_path: Path) -> None:
    """Open and close the store once: a store another process holds open fails the run now, with
    the store's message (UserError), instead of after all the scoring."""
    from qa_inspect import store

    with store.open_store(db_path):
        pass


def _finish(spool: ResultSpool, ingest: Any, ctx: Context, *, run_id: str, started: datetime,
            out: Path, db_path: Path, paths: Sequence[Path | str], rep: Reporter, render: bool,
            timer: StageTimer, wall: dict[str, float], copier: Any = None,
            streaming: StreamingStore | None = None) -> RunSummary:
    """Client side after the engine: store, outputs, reports from the spool (timed into ``timer``;
    these run once on the client, so ``wall`` gets the same figures). Only per-conversation
    frames are concatenated in memory; messages, findings and trace go from the spool's Parquet
    parts to DuckDB and to the output files part by part."""
    from qa_inspect import store

    before = dict(timer.seconds)
    # One frame family at a time: the per-conversation frames are the part of the client's memory
    # that grows with the night (~200 MB at 5M messages), so KPI stats and events are loaded for
    # the attribution, dropped during the store write (which reads the stats parts itself), and
    # loaded again for the agent KPIs.
    with timer("kpis"):
        stats, events = _stats_events(spool, ctx, ATTRIBUTION_COLUMNS)
        att = attribute_events(stats, events)
        del stats, events
    with timer("merge"):
        conversations = _by_conversation(spool.frame("conversations", pd.DataFrame()))
        review_items = _by_conversation(spool.frame("review_items", pd.DataFrame({S.CONVERSATION_ID: []})))
    with timer("kpis"):
        queue = review_queue(conversations, review_items)
        del review_items
        nights = sorted(str(x) for x in conversations[S.NIGHT].dropna().unique())
        ids = conversations[S.CONVERSATION_ID].copy()
    # handed over, not kept here: the store reads the conversations from the spool, and the callee
    # loads them again afterwards
    night = {"ids": ids, "att": att}
    del conversations, att, ids
    parts = {name: store.ParquetParts(spool.files(name)) for name in SPOOLED}

    # The big per-message/per-finding outputs are C++ work (DuckDB COPY, GIL released): a background
    # thread writes them to temp files once the store is closed (not during the store write: two
    # DuckDB buffer pools at once cost ~600 MB more at 5M messages) while this thread writes the
    # small outputs; they are renamed in place in the usual order, so a killed run never leaves a
    # mixed output set.
    jobs: dict[str, Callable[[Path], None]] = {}
    # Not re-sorted: rows come in partition order, each conversation whole (messages in seq order,
    # findings in the order the stages produced them). A global sort spills to disk once a night
    # outgrows DuckDB's buffer cap (5M messages: the findings/trace sorts made the outputs 7x slower
    # than at 1M, the messages sort +300 MB); conversations.csv is sorted (it is in memory).
    for name, spooled_name, cols, order in (("findings", "findings", list(S.FINDING_COLUMNS), ()),
                                            ("score_trace", "trace", None, ()),
                                            ("messages", "messages", list(S.MESSAGE_COLUMNS), ())):
        files = spool.files(spooled_name)
        if not files:
            continue
        for ext, csv in (("csv", True), ("parquet", False)):
            if name == "messages" and csv:
                continue
            tmpdir = spool.folder / f"duckdb-{name}-{ext}"
            job = functools.partial(_duck_parts, files, cols, order, csv, spill=tmpdir)
            jobs[f"{name}.{ext}"] = functools.partial(_behind_client, job) if copier is not None else job
    staged = _StagedOutputs(out, jobs, copier)
    if copier is not None:
        staged.start()  # in the pool's processes: their memory is not this process's
    try:
        return _finish_store_outputs(spool, ingest, ctx, run_id=run_id, started=started, out=out, db_path=db_path,
                                     paths=paths, rep=rep, render=render, timer=timer, wall=wall, before=before,
                                     night=night, queue=queue, nights=nights, parts=parts, staged=staged,
                                     streaming=streaming)
    finally:
        staged.close()


def _stats_events(spool: ResultSpool, ctx: Context,
                  stats_columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's KPI stats (only ``stats_columns`` when given) and order/payment events.
    Partitions are buckets of hashed conversation keys: sorted by conversation, so float sums (KPI
    means) do not depend on the partition layout or the engine."""
    return (_by_conversation(spool.frame("stats", pd.DataFrame(), columns=stats_columns)),
            _by_conversation(spool.frame("events", events_frame(S.empty_messages(), ctx.shops))))


COPY_NICENESS = 5  # pool workers copying outputs yield to the client's store, KPIs and reports


def _behind_client(job: Callable[..., None], target: Path) -> None:
    """A staged copy in a pool worker, at a lower CPU priority: on a machine with as many cores as
    workers the copies otherwise take a core from the client, whose store, KPIs and reports are
    the run's critical path; the copies only have to be done by the end. The worker keeps the
    priority for the rest of the run (its last tasks, agent pages, run while the client waits)."""
    with suppress(OSError):  # no nice (or not allowed): the copy runs at normal priority
        if os.nice(0) < COPY_NICENESS:
            os.nice(COPY_NICENESS - os.nice(0))
    job(target=target)


class _StagedOutputs:
    """Output files written to their temp names in the background (a thread, or the pool's worker
    processes); ``take`` waits for one and renames it in place (crash point ``before_rename`` as in
    _atomic); ``close`` removes leftovers."""

    def __init__(self, out: Path, jobs: dict[str, Callable[[Path], None]], executor: Any = None) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self.out, self.jobs = out, jobs
        self.own = executor is None  # a thread of ours, or the engine's process pool (not ours to shut)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-outputs") if self.own else executor
        self.tmp = {name: _tmp_name(out / name) for name in jobs}
        self.futures: dict[str, Future[None]] = {}

    def start(self) -> None:
        if not self.futures:
            self.futures = {name: self.pool.submit(job, target=self.tmp[name]) for name, job in self.jobs.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.jobs

    def take(self, name: str) -> Path:
        self.futures[name].result()
        path = self.out / name
        crash_point("before_rename", path.name)
        os.replace(self.tmp[name], path)
        return path

    def close(self) -> None:
        from concurrent.futures import wait

        for f in self.futures.values():
            f.cancel()
        wait(list(self.futures.values()))  # nothing may still write a temp file we remove
        if self.own:
            self.pool.shutdown(wait=True)
        for tmp in self.tmp.values():
            tmp.unlink(missing_ok=True)


def _overridden_totals(con: Any, ids: pd.Series) -> pd.Series:
    """Human totals of the night's overridden conversations, read before the store write (which
    does not touch the reviews); the heap its hashing of every id took (~100 MB at 5M messages)
    is handed back before DuckDB's write buffers grow."""
    from qa_inspect import store

    human = store.human_totals(con, ids, every_id=False)
    release_memory()
    return human


def _finish_store_outputs(spool: ResultSpool, ingest: Any, ctx: Context, *, run_id: str, started: datetime,
                          out: Path, db_path: Path, paths: Sequence[Path | str], rep: Reporter, render: bool,
                          timer: StageTimer, wall: dict[str, float], before: dict[str, float],
                          night: dict[str, pd.DataFrame], queue: pd.DataFrame, nights: list[str],
                          parts: dict[str, Any], staged: _StagedOutputs,
                          streaming: StreamingStore | None = None) -> RunSummary:
    """``night``: conversations and att (attribution), taken out of the dict so each is freed once
    used. The store connection is closed while the KPIs are computed, so DuckDB's buffers and the
    KPI frames are not in memory at the same time."""
    import duckdb

    from qa_inspect import store

    ids, att = night.pop("ids"), night.pop("att")
    release_memory()  # the merge's transient copies, before DuckDB's buffers

    rep.log(f"writing store {db_path}")
    # status "stored" until outputs and reports are written too (run_audit sets "ok" at the end), so
    # a run killed after the store commit is not recorded as a complete one
    run = store.RunRecord(run_id=run_id, started_at=started, ruleset_version=ctx.version, qa_version=__version__,
                          inputs=[str(p) for p in paths], out_dir=str(out), n_rejects=len(ingest.rejects),
                          nights=nights, status="stored")
    conv_parts = store.FrameParts(tuple(spool.frame_files("conversations")))
    stats_parts = store.FrameParts(tuple(spool.frame_files("stats")))
    stored = False
    if streaming is not None:
        try:
            if streaming.writer is not None:  # the per-partition rows are in its open transaction (pool)
                with timer("store"):
                    human = _overridden_totals(streaming.con, ids)
                    streaming.writer.finish(run=run, conversations=conv_parts, conversation_ids=ids,
                                            conversation_kpis=stats_parts, attribution=att, review_queue=queue,
                                            checkpoint=lambda step: crash_point("store", step))
                    stored = True
        except duckdb.Error as exc:  # finish rolled back; out of memory: written whole below
            if not store.out_of_memory(exc):
                raise
        finally:
            streaming.close()  # rolls back whatever did not commit, releases the store file
    if stored:
        crash_point("store", "committed")
    else:
        with store.open_store(db_path) as con:
            with timer("store"):
                # read before the write (which does not touch the reviews), while DuckDB's buffers are empty
                human = _overridden_totals(con, ids)
                # the store keeps the automatic total (calibration compares it with people) ...
                store.write_run(con, run, conversations=conv_parts, conversation_ids=ids, messages=parts["messages"],
                                findings=parts["findings"], trace=parts["trace"], conversation_kpis=stats_parts,
                                attribution=att, review_queue=queue, checkpoint=lambda step: crash_point("store", step))
        crash_point("store", "committed")
    del ids
    release_memory()
    with timer("kpis"):
        # ... while outputs, KPIs and reports use a human override where one exists. The KPIs read
        # four conversation columns (_SCORE_COLUMNS): the whole conversations frame is loaded only
        # once stats and events are gone (holding all of them at once was the peak of a 5M night)
        scores = apply_overrides(spool.frame("conversations", pd.DataFrame(), columns=_SCORE_COLUMNS), human,
                                 ctx.scorecard)
        stats, events = _stats_events(spool, ctx)
        agents, shops_k = grouped_kpis(stats, events, groupings=[(S.SHOP_ID, S.AGENT_ID), (S.SHOP_ID,)],
                                       scores=scores, attribution=att)
        del stats, events, att, scores
        release_memory()
    with timer("merge"):
        conversations = _by_conversation(spool.frame("conversations", pd.DataFrame()))
    with timer("kpis"):
        conversations = apply_overrides(conversations, human, ctx.scorecard)
        del human
    with store.open_store(db_path) as con:
        with timer("store"):
            store.write_run_kpis(con, run_id, agents=agents, shops=shops_k,
                                 checkpoint=lambda step: crash_point("store", step))
            trend = store.agent_trend(con)
    crash_point("store", "closed")
    release_memory()
    staged.start()
    conv_out = conversations[[*S.CONVERSATION_COLUMNS, S.NA_REASONS, AUTO_TOTAL, S.HUMAN_TOTAL, S.OVERRIDDEN]]
    reports = None
    if render and not staged.own:
        # the pool's processes copy the big files: the pages are rendered (into their staging
        # folder) meanwhile and swapped in after the outputs, in the usual order. With one worker
        # the copies run in this process's thread: rendering during them saved ~3 s per 1M
        # messages but stacked both phases' memory (5M messages with reports: 928 against 900 MiB)
        with timer("reports"):
            reports = _render_reports(run_id, conv_out, db_path, agents, shops_k, trend, queue, ctx, out, rep,
                                      executor=staged.pool)

    rep.log(f"writing outputs to {out}")
    with timer("outputs"):
        outputs: dict[str, str] = {}
        empties = {"findings": S.empty_findings(), "score_trace": pd.DataFrame(columns=list(TRACE_COLUMNS)),
                   "messages": S.empty_messages()}
        for name, df in (("conversations", conv_out), ("findings", None), ("agents", agents), ("shops", shops_k),
                         ("review_queue", queue), ("score_trace", None)):
            for ext, writer in (("csv", write_csv), ("parquet", write_parquet)):
                f = f"{name}.{ext}"
                outputs[f] = str(staged.take(f) if f in staged else
                                 writer(empties[name] if df is None else df, out / f))
                crash_point("output", f)
        outputs["messages.parquet"] = str(staged.take("messages.parquet") if "messages.parquet" in staged else
                                          write_parquet(empties["messages"], out / "messages.parquet"))
        outputs["rejects.csv"] = str(write_csv(ingest.rejects, out / "rejects.csv"))
        crash_point("output", "rejects.csv")

    summary = RunSummary(run_id=run_id, out_dir=out, db=db_path, ruleset_version=ctx.version,
                         messages=spool.rows["messages"], rejects=len(ingest.rejects),
                         conversations=len(conversations), findings=spool.rows["findings"], review_items=len(queue),
                         vetoes=int(conversations[S.VETO].sum()),
                         mean_total=float(conversations[S.TOTAL].mean()), nights=nights, outputs=outputs)
    if render:
        with timer("reports"):
            if reports is None:
                reports = _render_reports(run_id, conv_out, db_path, agents, shops_k, trend, queue, ctx, out, rep)
            summary.reports = _swap_staged(reports) if reports is not None else None
    for k in ("merge", "kpis", "store", "outputs", "reports"):
        if k in timer.seconds:
            wall[k] = timer.seconds[k] - before.get(k, 0.0)  # kpis: only the client-side share
    return summary


_SCORE_COLUMNS = (S.CONVERSATION_ID, S.TOTAL, S.GRADE, S.VETO)  # what apply_overrides + agent_kpis read


def apply_overrides(conversations: pd.DataFrame, human_total: pd.Series, scorecard: Scorecard) -> pd.DataFrame:
    """TOTAL/GRADE become the human override where a review overrode them; AUTO_TOTAL keeps the
    scorecard's total. ``human_total``: the override total, indexed by conversation id (ids without
    one are NaN or absent)."""
    out = conversations.copy(deep=False)  # copy-on-write: only the columns written here are copied
    out[AUTO_TOTAL] = out[S.TOTAL]
    out[S.HUMAN_TOTAL] = out[S.CONVERSATION_ID].map(human_total).astype("float64")
    out[S.OVERRIDDEN] = out[S.HUMAN_TOTAL].notna()
    ov = out[S.OVERRIDDEN]
    out.loc[ov, S.TOTAL] = out.loc[ov, S.HUMAN_TOTAL]
    out.loc[ov, S.GRADE] = [scorecard.grade(float(t)) for t in out.loc[ov, S.HUMAN_TOTAL]]
    return out


def _render_reports(run_id: str, conversations: pd.DataFrame, db_path: Path, agents: pd.DataFrame,
                    shops_k: pd.DataFrame, trend: pd.DataFrame, queue: pd.DataFrame,
                    ctx: Context, out: Path, rep: Reporter, executor: Any = None) -> _Staged | None:
    """Reports are the last stage, rendered into a staging folder (the caller swaps it in after
    the outputs); when the reports package is not installed the run says so. ``executor``: the
    pool, offered the agent pages once it is done with the output copies (render_reports).

    The findings are aggregated in one streaming pass over the store; only the findings and
    messages of the conversations the pages show are read back (a few thousand of a million),
    plus the run's buyers for consistent aliases."""
    try:
        data_mod = importlib.import_module("qa_inspect.reports.data")
        importlib.import_module("qa_inspect.reports.render")
    except ImportError as exc:
        rep.log(f"reports not rendered: reports stage unavailable ({exc})")
        return None
    from qa_inspect import store

    data = data_mod.ReportData(run_id=run_id, generated_at=datetime.now().astimezone(),
                               conversations=conversations, messages=S.empty_messages(),
                               findings=S.empty_findings(), agent_kpis=agents, shop_kpis=shops_k, trend=trend,
                               review_queue=queue, shops=ctx.shops)
    with store.open_store(db_path, read_only=True) as con:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'messages'").fetchone()[0]:
            raise BugError(f"store {db_path} has no messages table after the run wrote it")
        data = data_mod.with_store_findings(con, data)
    return _render_staged(data, out, rep, executor)


def swap_in_reports(data: Any, out: Path, rep: Reporter) -> str:
    """Render into a staging folder and swap it in: a killed run never leaves a half-written report
    set where the last good one was (render_reports writes <dir>/reports/ file by file)."""
    return _swap_staged(_render_staged(data, out, rep))


@dataclass
class _Staged:
    out: Path
    staging: Path
    index: Any


def _render_staged(data: Any, out: Path, rep: Reporter, executor: Any = None) -> _Staged:
    render_mod = importlib.import_module("qa_inspect.reports.render")
    rep.log("rendering reports")
    staging = out / f"{_STAGING_PREFIXES[0]}{data.run_id}"
    idx = render_mod.render_reports(data, staging, executor=executor)
    crash_point("reports", "rendered")
    return _Staged(out, staging, idx)


def _swap_staged(staged: _Staged) -> str:
    out, staging, idx = staged.out, staged.staging, staged.index
    old = out / f"{_STAGING_PREFIXES[1]}{staging.name[len(_STAGING_PREFIXES[0]):]}"
    final = out / REPORTS_DIR
    if final.exists():
        os.replace(final, old)
    crash_point("reports", "swapping")
    os.replace(staging / REPORTS_DIR, final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    index = Path(getattr(idx, "index", staging / REPORTS_DIR / "index.html"))
    return str(final / index.relative_to(index.parent))
