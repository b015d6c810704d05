"""Stage 1: chat exports -> canonical messages (schema.MESSAGE_COLUMNS) + rejects.

Public API: ``ingest_paths``, ``write_ingest``, ``IngestResult``, ``stc3_labels``, ``IMPORTERS``;
the streaming pieces (``plan_chunks`` -> ``spill_chunk`` per chunk -> ``load_bucket`` per bucket)
are in ``ingest.stream``.
"""

from __future__ import annotations

from qa_inspect.ingest.base import FileImport, FileInfo, ImportContext
from qa_inspect.ingest.core import (
    IMPORTERS,
    IngestResult,
    collect_files,
    detect_format,
    ingest_paths,
    ingest_to_dir,
    write_ingest,
)
from qa_inspect.ingest.profiles import ImportProfile, load_profiles
from qa_inspect.ingest.research import stc3_labels
from qa_inspect.ingest.stream import (
    ChunkImport,
    ChunkRef,
    ChunkSummary,
    IngestPlan,
    assemble,
    chunk_rejects,
    conversation_key_bucket,
    fold_duplicates,
    import_context,
    load_bucket,
    merge_file_infos,
    no_usable_messages,
    parse_chunk,
    plan_chunks,
    spill_chunk,
)

__all__ = ["IMPORTERS", "ChunkImport", "ChunkRef", "ChunkSummary", "FileImport", "FileInfo", "ImportContext",
           "ImportProfile", "IngestPlan", "IngestResult", "assemble", "chunk_rejects", "collect_files",
           "conversation_key_bucket", "detect_format", "fold_duplicates", "import_context", "ingest_paths",
           "ingest_to_dir", "load_bucket", "load_profiles", "merge_file_infos", "no_usable_messages",
           "parse_chunk", "plan_chunks", "spill_chunk", "stc3_labels", "write_ingest"]
