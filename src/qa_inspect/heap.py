"""Giving freed heap pages back to the operating system between memory-hungry phases."""

from __future__ import annotations


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim) before a phase that allocates
    through another allocator (DuckDB's buffers) or renders on top of a finished one: otherwise the
    pages freed by pandas stay in this process and the next phase's memory comes on top. A no-op
    where there is no glibc. Arrow's own pool (mimalloc: the spool's Parquet reads and Arrow-backed
    string columns) keeps freed pages too; it is asked to return them as well."""
    import ctypes
    import ctypes.util

    import pyarrow as pa

    pa.default_memory_pool().release_unused()

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # pragma: no cover - no C library to load
        pass
