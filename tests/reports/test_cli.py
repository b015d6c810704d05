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


def test_send_exit_code_reports_failed_and_unknown_and_resend_unknown(
        store: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from test_mail_faults import FaultController, FaultHandler, _free_port

    db, rules = store
    handler, port = FaultHandler(), _free_port()
    handler.faults = {"boss@island.example": "drop_data", "ops@chenguang.example": "rcpt_451"}
    ctl = FaultController(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        for key, val in {"HOST": "127.0.0.1", "PORT": str(port), "SECURITY": "none", "FROM": "qa@x.example"}.items():
            monkeypatch.setenv(f"QA_INSPECT_SMTP_{key}", val)
        for key in ("USER", "PASSWORD"):
            monkeypatch.delenv(f"QA_INSPECT_SMTP_{key}", raising=False)
        runner = CliRunner()
        args = ["send", "--run", "r1", "--db", str(db), "--rules", str(rules)]
        res = runner.invoke(app, args)
        assert res.exit_code == 1, res.output
        assert "FAILED tw-island" not in res.output and "UNKNOWN tw-island -> boss@island.example" in res.output
        assert "FAILED tmall-chenguang -> ops@chenguang.example" in res.output
        handler.faults = {}
        res = runner.invoke(app, args)  # the refused one is retried; the unknown one is not
        assert res.exit_code == 1 and "sent 1," in res.output and "UNKNOWN" in res.output, res.output
        res = runner.invoke(app, [*args, "--resend-unknown"])
        assert res.exit_code == 0 and "sent 1," in res.output, res.output
        assert sorted(r for r, _ in handler.received) == sorted(
            ["owner@chenguang.example", "ops@chenguang.example", "boss@island.example"])
    finally:
        ctl.stop()
