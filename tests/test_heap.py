"""heap.release_memory runs between phases of a big process: it must not fork."""

from __future__ import annotations

import subprocess

import pytest

from qa_inspect.heap import release_memory


def test_release_memory_starts_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """ctypes.util.find_library ran ldconfig in a forked child on every call (a fork of a run of
    several hundred MB, seen as a second process in the benchmark's RSS tree)."""
    started: list[object] = []
    real = subprocess.Popen.__init__

    def spy(self: subprocess.Popen[bytes], *args: object, **kwargs: object) -> None:
        started.append(args[0] if args else kwargs.get("args"))
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    for _ in range(3):
        release_memory()
    assert started == []


def test_release_memory_trims_the_heap() -> None:
    """Freed large blocks are handed back: RSS after freeing ~200 MB of small objects and trimming
    is well below RSS with them alive."""
    def rss_kib() -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))

    pytest.importorskip("ctypes")
    try:
        rss_kib()
    except (OSError, StopIteration):
        pytest.skip("no /proc/self/status")
    blobs = [bytes(4000) + str(i).encode() for i in range(50_000)]  # ~200 MB below the mmap threshold
    pin = [bytes(100) + str(i).encode() for i in range(1_000)]  # above them: free() alone cannot shrink the heap
    alive = rss_kib()
    del blobs
    freed = rss_kib()
    release_memory()
    assert freed > alive - 50_000  # freeing alone kept the pages
    assert rss_kib() < alive - 100_000
    assert len(pin) == 1_000
