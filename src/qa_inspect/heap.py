"""Giving freed heap pages back to the operating system between memory-hungry phases."""

from __future__ import annotations


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim) before a phase that allocates
    through another allocator (DuckDB's buffers) or renders on top of a finished one: otherwise the
    pages freed by pandas stay in this process and the next phase's memory comes on top. A no-op
    where there is no glibc. Arrow's own pool (mimalloc: the spool's Parquet reads and Arrow-backed
    string columns) keeps freed pages too; it is asked to return them as well.

    malloc_trim is looked up in the symbols the process already has loaded (``CDLL(None)``), not
    with ``ctypes.util.find_library``: that runs ``ldconfig`` in a forked child on every call, a
    fork of a process of several hundred MB in the middle of a run."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:  # pragma: no cover - no symbol table to open
        return
    if trim is not None:
        trim(0)
