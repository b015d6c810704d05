"""``report`` and ``send``: render a run's HTML reports / email merchants their report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qa_inspect.cli.common import RulesOpt, call

RunOpt = Annotated[str, typer.Option("--run", help="Run id whose results to use (see the runs table).")]
DbOpt = Annotated[Path | None, typer.Option("--db", help="DuckDB store of the runs. Default: $QA_INSPECT_DB.")]


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``send``."""

    @app.command("report")
    def report(
        run: RunOpt,
        out: Annotated[Path, typer.Option("--out", help="Folder to write reports/ into.")] = Path("."),
        db: DbOpt = None,
        rules: RulesOpt = None,
        no_mask: Annotated[bool, typer.Option("--no-mask", help="Do not mask buyer PII in merchant "
                                              "reports (internal use only).")] = False,
    ) -> None:
        """Render agent, merchant, overview and coaching reports of a run as offline HTML."""
        from qa_inspect.reports.api import report_from_store

        idx = call(report_from_store, run, out, db=db, rules=rules, mask_pii_for_merchants=not no_mask)
        typer.echo(f"wrote {len(idx.all_files())} reports; overview: {idx.index}")

    @app.command("send")
    def send(
        run: RunOpt,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Write .eml files instead of sending.")] = False,
        db: DbOpt = None,
        rules: RulesOpt = None,
        smtp_config: Annotated[Path | None, typer.Option(
            "--smtp-config", help="SMTP settings YAML (default <rules>/smtp.yaml); "
            "QA_INSPECT_SMTP_HOST/PORT/USER/PASSWORD/SECURITY/FROM override it.")] = None,
        outbox_dir: Annotated[Path | None, typer.Option(
            "--outbox-dir", help="Where --dry-run writes .eml files (default ./outbox).")] = None,
        resend_unknown: Annotated[bool, typer.Option(
            "--resend-unknown", help="Also resend messages whose delivery is unknown (the connection was "
            "lost after the whole message was sent); the recipient may get them twice.")] = False,
    ) -> None:
        """Email each merchant its report once; failed sends stay queued and are retried next time.

        Exit code 1 if any message failed or its delivery is unknown."""
        from qa_inspect.reports.api import send_from_store

        res = call(send_from_store, run, db=db, rules=rules, smtp_config=smtp_config, dry_run=dry_run,
                   outbox_dir=outbox_dir, resend_unknown=resend_unknown)
        typer.echo(res.summary())
        if not res.ok:
            raise typer.Exit(1)
