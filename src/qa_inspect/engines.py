"""Execution engines for the partition work of the nightly run: ``local``, ``pool``, ``dask``.

An engine opens a :class:`Session` that maps a task over items: ``task(item, shared, ctx, timer)``
is a module-level function (picklable by reference), ``ctx`` the configuration (rule set,
knowledge bases, models, tokenizer, shops, scorecard) loaded ONCE per process (pool
initializer, dask worker plugin), never per item. Results come back in item order with a
bounded number of items in flight, so neither the client nor the engine holds the whole night.
The pipeline runs its phases (ingest chunks into buckets, count reply templates per bucket,
score each bucket) as maps over the same session, so workers are started and loaded once.

``local`` and ``pool`` share the client's file system: tasks read and write the run's spill
folder themselves. ``dask`` workers may not see it (``shared_files`` is False): the pipeline then
loads each bucket on the client and ships the frame.

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
from typing import Any

from qa_inspect.errors import BugError, UsageError, UserError
from qa_inspect.pipeline import (
    Context,
    StageTimer,
    load_context,
    stage,
)
from qa_inspect.registry import Registry

Task = Callable[[Any, Any, Context, StageTimer], Any]
IN_FLIGHT_PER_WORKER = 2  # items queued per worker: keeps workers busy, bounds client memory
WORKER_CONFIG = "worker_config"  # stage_seconds key: context loading inside workers, summed


@dataclass
class EngineOptions:
    """What the command line says about execution."""

    workers: int = 1
    dask_address: str | None = None
    models_dir: Path | None = None


@dataclass
class EngineRun:
    """Timing of a session: ``stage_seconds`` summed over items where they ran (worker side),
    ``wall_seconds`` the client's clock per pass."""

    delivered: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    workers: int = 1
    context_loads: int = 0  # how many times workers loaded the context (one per worker, never per item)


class Session:
    """An open engine: ``map`` a task over items; ``run`` accumulates the timing."""

    name = "local"
    shared_files = True  # tasks can read/write the client's spill folder

    def __init__(self, ctx: Context, opts: EngineOptions) -> None:
        self.ctx, self.opts = ctx, opts
        self.run = EngineRun()

    def map(self, task: Task, items: Sequence[Any], shared: Any = None) -> Iterator[Any]:
        raise NotImplementedError  # pragma: no cover - every registered engine overrides it

    def close(self) -> None:
        return None

    def _account(self, seconds: dict[str, float]) -> None:
        if WORKER_CONFIG in seconds:
            self.run.context_loads += 1
        for k, v in seconds.items():
            self.run.stage_seconds[k] = self.run.stage_seconds.get(k, 0.0) + v


ENGINES: Registry[Callable[[Context, EngineOptions], Session]] = Registry("engine")


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


def _call(task: Task, item: Any, shared: Any, ctx: Context, load: dict[str, float]) -> tuple[Any, dict[str, float]]:
    """Run one task with a fresh timer; the worker's context load time rides on its first result."""
    timer = StageTimer()
    timer.add(load)
    return task(item, shared, ctx, timer), timer.seconds


# --------------------------------------------------------------------------- local
class LocalSession(Session):
    """In this process, with the context the client already loaded; one item at a time."""

    def map(self, task: Task, items: Sequence[Any], shared: Any = None) -> Iterator[Any]:
        for item in items:
            res, secs = _call(task, item, shared, self.ctx, {})
            self._account(secs)
            yield res


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
# A context that failed to load (a bad knowledge base, a model refused by its card): raised by the
# worker's tasks, so the client gets the ConfigError/UserError itself (exit 1). An initializer
# that raises instead breaks the pool with a bare BrokenProcessPool.
_WORKER_ERROR: BaseException | None = None


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
    global _WORKER_CTX, _WORKER_ERROR
    if parent is not None:
        _exit_with_parent(parent)
    _one_thread_per_worker()
    t = time.perf_counter()
    try:
        _WORKER_CTX = load_context(rules_dir, models_dir)
    except Exception as exc:  # noqa: BLE001 - re-raised by every task of this worker
        _WORKER_ERROR = exc
        return
    _WORKER_LOAD[WORKER_CONFIG] = time.perf_counter() - t
    import gc

    gc.collect()
    gc.freeze()  # the worker's context lives as long as the worker (see pipeline.quiet_gc)


def _pop_load(load: dict[str, float]) -> dict[str, float]:
    out = dict(load)
    load.clear()
    return out


def _pool_call(args: tuple[Task, Any, Any, str]) -> tuple[Any, dict[str, float]]:
    task, item, shared, version = args
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    if _WORKER_CTX is None:
        raise BugError("pool worker has no context (initializer did not run)")
    _check_version(_WORKER_CTX, version)
    return _call(task, item, shared, _WORKER_CTX, _pop_load(_WORKER_LOAD))


def _ready() -> None:
    """A no-op task: submitting one per worker makes the pool start them (and run the initializer)."""


def pool_start_method() -> str:
    """``fork`` where the OS has it: a forked worker starts with the client's imports (pandas,
    scikit-learn, the package: ~0.7 s of CPU per spawned worker, on the cores the client's ingest
    needs meanwhile); ``spawn`` elsewhere. The workers are forked before the client opens
    anything (run lock, store) and before it starts threads: with fork every worker of the pool
    is started by the first submit (ProcessPoolExecutor never forks later)."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def start_pool(rules_dir: Path, opts: EngineOptions) -> ProcessPoolExecutor:
    """Start the pool's workers now, so they load their context while the client loads its own."""
    pool = ProcessPoolExecutor(max_workers=max(1, opts.workers), mp_context=multiprocessing.get_context(
        pool_start_method()), initializer=_init_worker, initargs=(rules_dir, opts.models_dir, os.getpid()))
    for _ in range(max(1, opts.workers)):
        pool.submit(_ready)
    return pool


class PoolSession(Session):
    """``workers`` processes (forked, or spawned where there is no fork); each loads the context
    once in its initializer. Items go out and results come back pickled, a bounded number in flight."""

    name = "pool"

    def __init__(self, ctx: Context, opts: EngineOptions, pool: ProcessPoolExecutor | None = None) -> None:
        super().__init__(ctx, opts)
        self.run.workers = max(1, opts.workers)
        self.pool = pool or start_pool(ctx.rules_dir, opts)

    def map(self, task: Task, items: Sequence[Any], shared: Any = None) -> Iterator[Any]:
        window = self.run.workers * IN_FLIGHT_PER_WORKER
        for res, secs in bounded(lambda k: self.pool.submit(_pool_call, (task, items[k], shared, self.ctx.version)),
                                 lambda f: f.result(), len(items), window):
            self._account(secs)
            yield res

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


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


def _dask_call(task: Task, item: Any, shared: Any, plugin: str) -> tuple[Any, dict[str, float]]:
    from distributed import get_worker

    p = get_worker().plugins.get(plugin)
    ctx = getattr(p, "ctx", None)
    if p is None or ctx is None:
        raise BugError(f"dask worker has no loaded context plugin '{plugin}'")
    return _call(task, item, shared, ctx, p.take_load())


class DaskSession(Session):
    """The same tasks on an existing dask.distributed cluster (``Client(address)``).

    The configuration travels in a worker plugin (no shared mount needed for rules/models);
    items are submitted a bounded number at a time (two per worker), ``shared`` is scattered
    once per map. Nothing is pinned on the workers between maps, so cluster memory does not
    grow with the night. Workers are not assumed to see the client's disk (``shared_files``).
    """

    name = "dask"
    shared_files = False

    def __init__(self, ctx: Context, opts: EngineOptions) -> None:
        super().__init__(ctx, opts)
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - dask is a dependency
            raise UserError(f"the dask engine needs dask.distributed: {exc}") from None
        t0 = time.perf_counter()
        try:
            self.client = Client(opts.dask_address, set_as_default=False, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise UserError(f"cannot connect to the dask scheduler at {opts.dask_address}: {exc}") from None
        self.plugin = plugin_name(ctx.version)
        try:
            nworkers = len(self.client.scheduler_info().get("workers", {}))
            if nworkers == 0:
                try:
                    self.client.wait_for_workers(1, timeout=60)
                except TimeoutError:
                    raise UserError(f"the dask cluster at {opts.dask_address} has no workers") from None
                nworkers = len(self.client.scheduler_info().get("workers", {}))
            models = _snapshot(opts.models_dir) if opts.models_dir else None
            self.client.register_plugin(context_plugin(_snapshot(ctx.rules_dir), models, ctx.version),
                                        name=self.plugin)
        except BaseException:
            self.close()
            raise
        self.run.workers = nworkers
        self.run.wall_seconds["dask_setup"] = time.perf_counter() - t0

    def map(self, task: Task, items: Sequence[Any], shared: Any = None) -> Iterator[Any]:
        window = max(1, self.run.workers) * IN_FLIGHT_PER_WORKER
        shared_f = self.client.scatter(shared, broadcast=True) if shared is not None else None
        for res, secs in bounded(lambda k: self.client.submit(_dask_call, task, items[k], shared_f,
                                                              plugin=self.plugin, pure=False),
                                 lambda f: f.result(), len(items), window):
            self._account(secs)
            yield res

    def close(self) -> None:
        try:
            self.client.unregister_worker_plugin(self.plugin)
        except Exception:  # noqa: BLE001 - cleanup must not hide the run's own error
            pass
        self.client.close()


ENGINES.register("local", LocalSession)
ENGINES.register("pool", PoolSession)
ENGINES.register("dask", DaskSession)


def open_session(name: str, ctx: Context, opts: EngineOptions, pool: ProcessPoolExecutor | None = None) -> Session:
    """The named engine, started (workers spawned / cluster connected, context loaded there);
    ``pool``: a pool already started with ``start_pool`` (pool engine only)."""
    if pool is not None:
        if name != "pool":
            raise BugError(f"a started process pool was passed to the {name} engine")
        return PoolSession(ctx, opts, pool)
    return ENGINES.get(name)(ctx, opts)


__all__ = ["ENGINES", "EngineOptions", "EngineRun", "Session", "Task", "bounded", "context_plugin", "pool_start_method",
           "merge_counts", "open_session", "resolve_engine", "start_pool"]
