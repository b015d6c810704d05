"""Agent pages offered to a process pool (render_reports(executor=...)): the same files whether the
pool renders them, the caller takes them back from a busy pool, or no pool is given."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path

import pytest
from synthetic import bench_night

from qa_inspect.reports import render as R
from qa_inspect.reports.data import ReportData


@pytest.fixture(scope="module")
def night() -> ReportData:
    return R.with_stats(bench_night(9, 3))


def _files(idx: R.ReportIndex) -> dict[str, bytes]:
    return {str(p.relative_to(idx.out_dir)): p.read_bytes() for p in idx.all_files()}


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _block(seconds: float) -> None:
    time.sleep(seconds)


def test_pool_rendered_agent_pages_equal_the_inline_ones(night: ReportData, tmp_path: Path) -> None:
    inline = _files(R.render_reports(night, tmp_path / "inline"))
    with _pool(2) as pool:
        idx = R.render_reports(night, tmp_path / "pool", executor=pool)
    assert len([k for k in inline if k.startswith("agents/")]) == 9
    assert _files(idx) == inline
    assert list(idx.agents) == sorted(idx.agents)  # page order kept in the index


def test_batches_a_busy_pool_has_not_started_are_rendered_by_the_caller(night: ReportData, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's only worker is busy: the batches still waiting are taken back (the executor's call
    queue already holds two, workers + 1: those the pool renders once its worker is free)."""
    inline = _files(R.render_reports(night, tmp_path / "inline"))
    taken: list[list[str]] = []
    original = R._write_agent_pages

    def spy(data, look, root, ids, mask, env):  # type: ignore[no-untyped-def]
        if threading.current_thread() is threading.main_thread():
            taken.append(list(ids))
        return original(data, look, root, ids, mask, env)

    monkeypatch.setattr(R, "_write_agent_pages", spy)
    with _pool(1) as pool:
        pool.submit(_block, 0.0).result()  # the worker is up
        busy = pool.submit(_block, 2.0)
        idx = R.render_reports(night, tmp_path / "busy", executor=pool)
        assert busy.done()
    batch = -(-9 // R.AGENT_TASKS)
    assert 9 - 2 * batch <= sum(len(ids) for ids in taken) < 9
    assert _files(idx) == inline


class _AtSubmit(Executor):
    """Runs each task when it is submitted (a pool that is always free), in this process."""

    def __init__(self) -> None:
        self.ran = 0
        self.in_task = False

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        fut: Future[object] = Future()
        fut.set_running_or_notify_cancel()
        self.in_task = True
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed over like a pool would
            fut.set_exception(exc)
        finally:
            self.in_task = False
            self.ran += 1
        return fut


def test_every_batch_rendered_by_the_pool_gives_the_same_pages(night: ReportData, tmp_path: Path) -> None:
    """All agent pages from the pickled payload (the caller takes none back)."""
    inline = _files(R.render_reports(night, tmp_path / "inline"))
    ex = _AtSubmit()
    idx = R.render_reports(night, tmp_path / "pool", executor=ex)
    assert ex.ran == R.AGENT_TASKS - 1 or ex.ran == R.AGENT_TASKS  # 9 agents in batches of 3
    assert _files(idx) == inline


def test_a_batch_that_fails_in_the_pool_fails_the_call(night: ReportData, tmp_path: Path) -> None:
    ex = _AtSubmit()

    def mask(text: str) -> str:
        if ex.in_task:
            raise RuntimeError("mask failed in the pool")
        return text

    with pytest.raises(RuntimeError, match="mask failed in the pool"):
        R.render_reports(night, tmp_path / "fails", executor=ex, mask=mask)


def test_a_night_too_big_to_copy_into_workers_stays_in_the_caller(night: ReportData, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    inline = _files(R.render_reports(night, tmp_path / "inline"))
    monkeypatch.setattr(R, "POOL_PAYLOAD_MAX", 1024)
    ex = _AtSubmit()
    idx = R.render_reports(night, tmp_path / "big", executor=ex)
    assert ex.ran == 0
    assert _files(idx) == inline


def test_the_pool_gets_only_the_conversation_columns_agent_pages_read(night: ReportData) -> None:
    """What the batches unpickle: the page columns of every conversation, nothing else."""
    import pickle

    captured: list[bytes] = []

    class Capture(_AtSubmit):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            captured.append(args[0])
            return super().submit(fn, *args, **kwargs)

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        R.render_reports(night, Path(d), executor=Capture())
    data, _look = pickle.loads(captured[0])
    assert list(data.conversations.columns) == [c for c in R.AGENT_PAGE_COLUMNS if c in night.conversations.columns]
    assert len(data.conversations) == len(night.conversations)
    assert len(night.conversations.columns) > len(data.conversations.columns)
