"""Stage 1: chat exports -> canonical messages (schema.MESSAGE_COLUMNS) + rejects.

Public API: ``ingest_paths``, ``write_ingest``, ``IngestResult``, ``stc3_labels``, ``IMPORTERS``.
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

__all__ = ["IMPORTERS", "FileImport", "FileInfo", "ImportContext", "ImportProfile", "IngestResult",
           "collect_files", "detect_format", "ingest_paths", "ingest_to_dir", "load_profiles", "stc3_labels", "write_ingest"]
