"""Entry points for the ``report`` and ``send`` commands: resolve config, open the store, call
the library. Kept out of the CLI so the CLI stays one call per command."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from qa_inspect.config import load_shops, resolve_rules_dir
from qa_inspect.errors import UsageError
from qa_inspect.reports.data import load_report_data
from qa_inspect.reports.mail import SMTP_FILE, SendResult, load_smtp_config, send_reports
from qa_inspect.reports.render import ReportIndex, render_reports
from qa_inspect.scoring.scorecard import SCORECARD_FILE, load_scorecard

DB_ENV = "QA_INSPECT_DB"


def resolve_db(db: Path | None) -> Path:
    path = db or (Path(os.environ[DB_ENV]) if os.environ.get(DB_ENV) else None)
    if path is None:
        raise UsageError(f"no store given: pass --db FILE or set ${DB_ENV}")
    if not Path(path).is_file():
        raise UsageError(f"store not found: {path}")
    return Path(path)


def report_from_store(run_id: str, out_dir: Path, *, db: Path | None = None, rules: Path | None = None,
                      mask_pii_for_merchants: bool = True) -> ReportIndex:
    """Render the reports of ``run_id`` read from the DuckDB store into ``out_dir/reports``."""
    rules_dir = resolve_rules_dir(rules)
    shops = load_shops(rules_dir)
    # overridden totals get the scorecard's grade; without a scorecard their grade is left blank
    grade = load_scorecard(rules_dir).grade if (rules_dir / SCORECARD_FILE).is_file() else None
    con = duckdb.connect(str(resolve_db(db)), read_only=True)
    try:
        data = load_report_data(con, run_id, shops, grade=grade)
    finally:
        con.close()
    return render_reports(data, out_dir, mask_pii_for_merchants=mask_pii_for_merchants)


def send_from_store(run_id: str, *, db: Path | None = None, rules: Path | None = None,
                    smtp_config: Path | None = None, dry_run: bool = False,
                    outbox_dir: Path | None = None, resend_unknown: bool = False) -> SendResult:
    """Email each merchant of ``run_id``; outbox and data in the store, SMTP from file/env."""
    db_path = resolve_db(db)
    rules_dir = resolve_rules_dir(rules)
    shops = load_shops(rules_dir)
    smtp = None
    if not dry_run:
        smtp = load_smtp_config(smtp_config or rules_dir / SMTP_FILE)
    if dry_run and outbox_dir is None:
        outbox_dir = Path("outbox")
    con = duckdb.connect(str(db_path))
    try:
        return send_reports(con, smtp, run_id=run_id, shops=shops, dry_run=dry_run, outbox_dir=outbox_dir,
                            resend_unknown=resend_unknown)
    finally:
        con.close()
