"""``qa-inspect report`` and ``qa-inspect send`` against a DuckDB store file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_data import _store
from typer.testing import CliRunner

from qa_inspect.cli import app
from qa_inspect.reports.data import ReportData


@pytest.fixture
def store(report_data: ReportData, tmp_path: Path) -> tuple[Path, Path]:
    db = tmp_path / "qa.duckdb"
    _store(db, report_data, ["r1"])
    rules = tmp_path / "rules"
    rules.mkdir()
    shops = [s.model_dump(mode="json", exclude_none=True) for s in report_data.shops.values()]
    (rules / "shops.yaml").write_text(yaml.safe_dump({"shops": shops}, allow_unicode=True), encoding="utf-8")
    return db, rules


def test_report_command_writes_all_reports(store: tuple[Path, Path], tmp_path: Path) -> None:
    db, rules = store
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["report", "--run", "r1", "--db", str(db), "--rules", str(rules), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "reports" / "index.html").is_file()
    assert len(list((out / "reports" / "agents").glob("*.html"))) == 4
    assert len(list((out / "reports" / "merchants").glob("*.html"))) == 2


def test_send_dry_run_and_errors(store: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db, rules = store
    for key in ("HOST", "PORT", "USER", "PASSWORD", "SECURITY", "FROM"):
        monkeypatch.delenv(f"QA_INSPECT_SMTP_{key}", raising=False)
    monkeypatch.delenv("QA_INSPECT_DB", raising=False)
    runner = CliRunner()
    outbox = tmp_path / "eml"
    res = runner.invoke(app, ["send", "--run", "r1", "--dry-run", "--db", str(db), "--rules", str(rules),
                              "--outbox-dir", str(outbox)])
    assert res.exit_code == 0, res.output
    assert len(list(outbox.glob("*.eml"))) == 3 and "dry-run files 3" in res.output

    res = runner.invoke(app, ["send", "--run", "r1", "--db", str(db), "--rules", str(rules)])
    assert res.exit_code == 1 and "SMTP host not set" in res.output

    res = runner.invoke(app, ["send", "--run", "r1", "--rules", str(rules)])
    assert res.exit_code == 2 and "--db" in res.output

    res = runner.invoke(app, ["report", "--run", "zzz", "--db", str(db), "--rules", str(rules),
                              "--out", str(tmp_path / "o2")])
    assert res.exit_code == 1 and "known runs: r1" in res.output


def test_commands_have_help() -> None:
    for cmd in ("report", "send"):
        res = CliRunner().invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "--run" in res.output
