"""Execution engines for the partition passes of the nightly run: ``local``, ``pool``, ``dask``.

Every engine runs the same two passes over partitions of whole conversations (see
pipeline.py): pass 1 ``count_partition`` (normalise, count reply templates), the client merges
the template counts of the whole batch, pass 2 ``process_partition`` with the merged counts. Engines differ only in where the passes run and how the context (rule set,
knowledge bases, models, tokenizer, shops, scorecard) gets there: it is loaded ONCE per
process (pool initializer, dask worker plugin), never per partition. Results come back to the
client one partition at a time and go to a ``sink`` (pipeline.ResultSpool spills them to disk),
so neither the client nor the engine ever holds the whole night: partitions are produced lazily
and at most a few per worker are in flight.

Engines are looked up by name in ``ENGINES`` (an explicit registry): unknown names are rejected.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from qa_inspect.errors import BugError, UsageError, UserError
from qa_inspect.pipeline import (
    Context,
    PartitionResult,
    Reporter,
    StageTimer,
    count_partition,
    crash_point,
    load_context,
    process_partition,
    stage,
)
from qa_inspect.registry import Registry

Counted = tuple[Counter[str], dict[str, float]]
Sink = Callable[[int, PartitionResult], None]
IN_FLIGHT_PER_WORKER = 2  # partitions queued per worker: keeps workers busy, bounds client memory


@dataclass
class EngineOptions:
    """What the command line says about execution."""

    workers: int = 1
    dask_address: str | None = None
    models_dir: Path | None = None


@dataclass
class EngineRun:
    """How many partition results went to the sink, plus timing: ``stage_seconds`` is summed over
    partitions where they ran (worker side), ``wall_seconds`` is the client's clock per pass."""

    delivered: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    workers: int = 1
    context_loads: int = 0  # how many times workers loaded the context (one per worker, never per partition)


WORKER_CONFIG = "worker_config"  # stage_seconds key: context loading inside workers, summed


class Engine(Protocol):
    def __call__(self, parts: Sequence[pd.DataFrame], ctx: Context, opts: EngineOptions,
                 rep: Reporter, sink: Sink) -> EngineRun: ...


ENGINES: Registry[Engine] = Registry("engine")


def merge_counts(counts: Sequence[Counter[str]]) -> Counter[str]:
    """The batch-wide template counts (the ruleengine's merge, so every engine agrees)."""
    return Counter(stage("qa_inspect.ruleengine", "merge_template_counts")(list(counts)))


def resolve_engine(name: str | None, opts: EngineOptions) -> str:
    """The engine to use: explicit ``name`` or implied by the options; contradictions are usage errors."""
    if opts.workers < 1:
        raise UsageError("--workers must be at least 1")
    if name is None:
        name = "dask" if opts.dask_address else ("pool" if opts.workers > 1 else "local")
    try:
        ENGINES.get(name)
    except UserError as exc:
        raise UsageError(str(exc)) from None
    if name == "dask" and not opts.dask_address:
        raise UsageError("the dask engine needs --dask ADDRESS (scheduler address, e.g. tcp://host:8786)")
    if name != "dask" and opts.dask_address:
        raise UsageError(f"--dask ADDRESS only applies to the dask engine, not '{name}'")
    if name == "dask" and opts.workers != 1:
        raise UsageError("--workers does not apply to --dask: the cluster's workers are used")
    if name == "local" and opts.workers != 1:
        raise UsageError("the local engine runs in this process; use --workers only with the pool engine")
    return name


def _check_version(ctx: Context, expected: str) -> None:
    if ctx.version != expected:
        raise UserError(f"a worker loaded configuration version {ctx.version}, the client {expected}: the "
                        "rules/models changed during the run or workers run another qa-inspect; re-run")


# --------------------------------------------------------------------------- local
def run_local(parts: Sequence[pd.DataFrame], ctx: Context, opts: EngineOptions, rep: Reporter,
              sink: Sink) -> EngineRun:
    """In this process, with the context the client already loaded; one partition at a time."""
    timer = StageTimer()
    n = len(parts)
    t0 = time.perf_counter()
    per_part: list[Counter[str]] = []
    for i in range(n):
        per_part.append(count_partition(parts[i], ctx, timer))
        rep.progress("prepare", i + 1, n)
    counts = merge_counts(per_part)
    del per_part
    t1 = time.perf_counter()
    run = EngineRun()
    for i in range(n):
        sink(i, process_partition(parts[i], ctx, counts, timer))
        run.delivered += 1
        crash_point("partition", i + 1)
        rep.progress("score", i + 1, n)
    run.stage_seconds = timer.seconds
    run.wall_seconds = {"pass1": t1 - t0, "pass2": time.perf_counter() - t1}
    return run


def bounded(submit: Callable[[int], Any], result: Callable[[Any], Any], n: int, window: int) -> Iterator[Any]:
    """Results of ``submit(0..n-1)`` in order, with at most ``window`` submitted and not yet
    consumed: partitions are sliced (and pickled) only shortly before a worker needs them."""
    pending: deque[Any] = deque()
    nxt = 0
    while nxt < n or pending:
        while nxt < n and len(pending) < max(1, window):
            pending.append(submit(nxt))
            nxt += 1
        yield result(pending.popleft())


# --------------------------------------------------------------------------- pool
# One context per pool worker process, set by the initializer; read-only afterwards.
# _WORKER_LOAD holds the load time until the worker's first task reports it (timing only).
_WORKER_CTX: Context | None = None
_WORKER_LOAD: dict[str, float] = {}


def _one_thread_per_worker() -> None:
    """N worker processes each running an N-thread BLAS/OpenMP pool oversubscribe the cores (dask's
    nanny sets OMP_NUM_THREADS=1 for the same reason); numpy is already imported here, so limit the
    pools at runtime. threadpoolctl comes with scikit-learn."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return
    threadpool_limits(1)


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """A pool worker whose client was killed (SIGKILL, OOM killer) is never told to stop: it waits
    for work forever, holding a whole loaded context, and every crashed nightly run leaks N such
    processes. A daemon thread ends the worker once its parent is gone (re-parented)."""
    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="qa-inspect-parent-watch", daemon=True).start()


def _init_worker(rules_dir: Path, models_dir: Path | None, parent: int | None = None) -> None:
    global _WORKER_CTX
    if parent is not None:
        _exit_with_parent(parent)
    _one_thread_per_worker()
    t = time.perf_counter()
    _WORKER_CTX = load_context(rules_dir, models_dir)
    _WORKER_LOAD[WORKER_CONFIG] = time.perf_counter() - t


def _pop_load(load: dict[str, float]) -> dict[str, float]:
    out = dict(load)
    load.clear()
    return out


def _count_loads(run: EngineRun, seconds: dict[str, float]) -> None:
    if WORKER_CONFIG in seconds:
        run.context_loads += 1
    for k, v in seconds.items():
        run.stage_seconds[k] = run.stage_seconds.get(k, 0.0) + v


def _worker_ctx(version: str) -> Context:
    if _WORKER_CTX is None:
        raise BugError("pool worker has no context (initializer did not run)")
    _check_version(_WORKER_CTX, version)
    return _WORKER_CTX


def _pool_count(args: tuple[pd.DataFrame, str]) -> Counted:
    timer = StageTimer()
    ctx = _worker_ctx(args[1])
    timer.add(_pop_load(_WORKER_LOAD))
    counts = count_partition(args[0], ctx, timer)
    return counts, timer.seconds


def _with_load(res: PartitionResult, load: dict[str, float]) -> PartitionResult:
    for k, v in load.items():
        res.seconds[k] = res.seconds.get(k, 0.0) + v
    return res


def _pool_process(args: tuple[pd.DataFrame, Counter[str], str]) -> PartitionResult:
    ctx = _worker_ctx(args[2])
    return _with_load(process_partition(args[0], ctx, args[1]), _pop_load(_WORKER_LOAD))


def run_pool(parts: Sequence[pd.DataFrame], ctx: Context, opts: EngineOptions, rep: Reporter,
             sink: Sink) -> EngineRun:
    """``workers`` spawned processes; each loads the context once in its initializer. Partitions go
    out and results come back pickled (pandas frames), a bounded number in flight; both passes
    send the partition (pass 1 returns only the template counts, so nothing big is kept)."""
    n = len(parts)
    workers = max(1, min(opts.workers, n))
    run = EngineRun(workers=workers)
    window = workers * IN_FLIGHT_PER_WORKER
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(ctx.rules_dir, opts.models_dir, os.getpid())) as pool:
        per_part: list[Counter[str]] = []
        for i, (c, secs) in enumerate(bounded(lambda k: pool.submit(_pool_count, (parts[k], ctx.version)),
                                              lambda f: f.result(), n, window), 1):
            per_part.append(c)
            _count_loads(run, secs)
            rep.progress("prepare", i, n)
        counts = merge_counts(per_part)
        del per_part
        t1 = time.perf_counter()
        for i, res in enumerate(bounded(lambda k: pool.submit(_pool_process, (parts[k], counts, ctx.version)),
                                        lambda f: f.result(), n, window), 1):
            sink(i - 1, res)
            run.delivered += 1
            crash_point("pool_partition", i)
            _count_loads(run, res.seconds)
            rep.progress("score", i, n)
    run.wall_seconds = {"pass1": t1 - t0, "pass2": time.perf_counter() - t1}
    return run


# --------------------------------------------------------------------------- dask
def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder by relative path: the plugin ships the configuration itself, so
    workers need neither the client's file system nor a shared mount for rules/ and models."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _restore(files: dict[str, bytes], folder: Path) -> Path:
    for rel, data in files.items():
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return folder


def context_plugin(rules: dict[str, bytes], models: dict[str, bytes] | None, version: str) -> Any:
    """A dask WorkerPlugin: on every worker (including ones that join later) write the shipped
    rules/models to a temp folder and load the context once; tasks read it from the plugin.

    Registered under a name that carries the configuration version, so runs with different
    configurations on one long-lived cluster never share a context; the client unregisters it
    after the run. The class is built here so that importing this module (local runs, pool
    workers) does not import distributed (~1 s); cloudpickle ships it by value.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class ContextPlugin(WorkerPlugin):
        def __init__(self) -> None:
            self.rules, self.models, self.version = rules, models, version
            self.ctx: Context | None = None
            self._tmp: str | None = None

        def setup(self, worker: Any) -> None:
            self._tmp = tempfile.mkdtemp(prefix="qa-inspect-ctx-")
            base = Path(self._tmp)
            rules_dir = _restore(self.rules, base / "rules")
            models_dir = _restore(self.models, base / "models") if self.models is not None else None
            t = time.perf_counter()
            ctx = load_context(rules_dir, models_dir)
            _check_version(ctx, self.version)
            self.load = {WORKER_CONFIG: time.perf_counter() - t}
            self.lock = threading.Lock()
            self.ctx = ctx

        def take_load(self) -> dict[str, float]:
            """The load time, handed to the first task that asks (timing only)."""
            with self.lock:
                return _pop_load(self.load)

        def teardown(self, worker: Any) -> None:
            self.ctx = None
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)

    return ContextPlugin()


def plugin_name(version: str) -> str:
    return f"qa-inspect-context-{version}"


def _dask_ctx(name: str) -> tuple[Context, dict[str, float]]:
    from distributed import get_worker

    plugin = get_worker().plugins.get(name)
    ctx = getattr(plugin, "ctx", None)
    if plugin is None or ctx is None:
        raise BugError(f"dask worker has no loaded context plugin '{name}'")
    return ctx, plugin.take_load()


def _dask_count(partition: pd.DataFrame, plugin: str) -> Counted:
    timer = StageTimer()
    ctx, load = _dask_ctx(plugin)
    timer.add(load)
    counts = count_partition(partition, ctx, timer)
    return counts, timer.seconds


def _dask_process(partition: pd.DataFrame, counts: Counter[str], plugin: str) -> PartitionResult:
    ctx, load = _dask_ctx(plugin)
    return _with_load(process_partition(partition, ctx, counts), load)


def run_dask(parts: Sequence[pd.DataFrame], ctx: Context, opts: EngineOptions, rep: Reporter,
             sink: Sink) -> EngineRun:
    """Same passes on an existing dask.distributed cluster (``Client(address)``).

    Partitions are submitted a bounded number at a time (two per worker) in each pass; pass 1
    returns only template counts, pass 2 results come back one by one to the sink. Nothing is
    pinned on the workers between the passes, so cluster memory does not grow with the night.
    """
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise UserError(f"the dask engine needs dask.distributed: {exc}") from None
    n = len(parts)
    run = EngineRun()
    t0 = time.perf_counter()
    try:
        client = Client(opts.dask_address, set_as_default=False, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise UserError(f"cannot connect to the dask scheduler at {opts.dask_address}: {exc}") from None
    name = plugin_name(ctx.version)
    try:
        nworkers = len(client.scheduler_info().get("workers", {}))
        if nworkers == 0:
            try:
                client.wait_for_workers(1, timeout=60)
            except TimeoutError:
                raise UserError(f"the dask cluster at {opts.dask_address} has no workers") from None
            nworkers = len(client.scheduler_info().get("workers", {}))
        models = _snapshot(opts.models_dir) if opts.models_dir else None
        client.register_plugin(context_plugin(_snapshot(ctx.rules_dir), models, ctx.version), name=name)
        t_ctx = time.perf_counter()
        window = max(1, nworkers) * IN_FLIGHT_PER_WORKER
        per_part: list[Counter[str]] = []
        for i, (c, secs) in enumerate(bounded(
                lambda k: client.submit(_dask_count, parts[k], plugin=name, pure=False),
                lambda f: f.result(), n, window), 1):
            per_part.append(c)
            _count_loads(run, secs)
            rep.progress("prepare", i, n)
        counts = merge_counts(per_part)
        del per_part
        t1 = time.perf_counter()
        counts_f = client.scatter(counts, broadcast=True)
        for i, res in enumerate(bounded(
                lambda k: client.submit(_dask_process, parts[k], counts=counts_f, plugin=name, pure=False),
                lambda f: f.result(), n, window), 1):
            sink(i - 1, res)
            run.delivered += 1
            _count_loads(run, res.seconds)
            rep.progress("score", i, n)
        t2 = time.perf_counter()
    finally:
        try:
            client.unregister_worker_plugin(name)
        except Exception:  # noqa: BLE001 - cleanup must not hide the run's own error
            pass
        client.close()
    run.workers = nworkers
    run.wall_seconds = {"dask_setup": t_ctx - t0, "pass1": t1 - t_ctx, "pass2": t2 - t1}
    return run


ENGINES.register("local", run_local)
ENGINES.register("pool", run_pool)
ENGINES.register("dask", run_dask)


def run_engine(name: str, parts: Sequence[pd.DataFrame], ctx: Context, opts: EngineOptions,
               rep: Reporter, sink: Sink) -> EngineRun:
    """Run both passes with the named engine, each partition's result to ``sink(index, result)``;
    checks nothing was lost on the way."""
    run = ENGINES.get(name)(parts, ctx, opts, rep, sink)
    if run.delivered != len(parts):
        raise BugError(f"engine {name}: {len(parts)} partitions in, {run.delivered} results")
    return run


__all__ = ["ENGINES", "context_plugin", "Engine", "EngineOptions", "EngineRun", "Sink", "bounded", "merge_counts",
           "resolve_engine",
           "run_dask", "run_engine", "run_local", "run_pool"]
