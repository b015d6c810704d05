"""What an importer receives and returns; kept apart so importers do not import each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from qa_inspect.config import Shop
from qa_inspect.ingest.profiles import ImportProfile


@dataclass(frozen=True)
class ImportContext:
    """Everything an importer may use; passed in (no global state)."""

    shops: dict[str, Shop]
    profiles: dict[str, ImportProfile]
    profile: str | None = None
    encoding: str | None = None


@dataclass
class FileInfo:
    """Per-file accounting shown in the summary."""

    path: str
    format: str
    profile: str | None = None
    encoding: str | None = None
    data_rows: int = 0  # source records (rows / message lines / utterances) the file holds
    messages: int = 0
    rejects: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class FileImport:
    """Staged messages of one file: message columns minus seq; conversation_id NA -> sessionise."""

    messages: pd.DataFrame
    rejects: pd.DataFrame
    info: FileInfo


class Importer(Protocol):
    def __call__(self, path: Path, ctx: ImportContext) -> FileImport: ...
