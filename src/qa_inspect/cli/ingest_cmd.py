"""``qa-inspect ingest`` and ``qa-inspect init``: thin wrappers over qa_inspect.ingest / config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qa_inspect.cli.common import RulesOpt, call
from qa_inspect.config import init_rules_dir
from qa_inspect.ingest import ingest_to_dir


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and ``init`` to ``app``."""

    @app.command("ingest")
    def ingest(
        paths: Annotated[list[Path], typer.Argument(help="Export files or folders (walked recursively; "
                                                   "README* and hidden files are skipped).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for messages.parquet, "
                                          "rejects.csv and ingest_summary.json.")],
        fmt: Annotated[str | None, typer.Option("--format", help="Force an importer: csv, tsv, xlsx, json, "
                                                "jsonl, qianniu, jddc, stc3. Default: detect per file.")] = None,
        profile: Annotated[str | None, typer.Option("--profile", help="Import profile name "
                                                    "(rules/import_profiles/NAME.yaml) for generic tables. "
                                                    "Default: detect from the header row.")] = None,
        encoding: Annotated[str | None, typer.Option("--encoding", help="Force the text encoding (e.g. "
                                                     "utf-8, gbk, gb18030). Default: UTF-8/BOM, GBK, "
                                                     "GB18030 tried strictly in that order.")] = None,
        session_gap: Annotated[float, typer.Option("--session-gap", help="Minutes of silence that start a "
                                                   "new conversation when the export has no "
                                                   "conversation ids.")] = 10.0,
        rules: RulesOpt = None,
    ) -> None:
        """Import chat exports into the canonical message table and print a summary."""
        result = call(ingest_to_dir, paths, out, rules_dir=rules, fmt=fmt, profile=profile, encoding=encoding,
                      session_gap_minutes=session_gap)
        typer.echo(result.summary_text())
        typer.echo(f"wrote {out / 'messages.parquet'} and {out / 'rejects.csv'}")

    @app.command("init")
    def init(
        target: Annotated[Path, typer.Argument(help="Folder to create with a copy of the default rules.")],
        force: Annotated[bool, typer.Option("--force", help="Overwrite files in a non-empty folder.")] = False,
    ) -> None:
        """Copy the default configuration (rules, profiles, shops, dictionaries) into DIR to edit."""
        copied = call(init_rules_dir, target, force=force)
        typer.echo(f"copied {len(copied)} files into {target}")
