"""Merchant email through a real SMTP server (aiosmtpd on loopback), outbox idempotency, config."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import duckdb
import pytest
import synthetic as syn
from aiosmtpd.controller import Controller

from qa_inspect.errors import ConfigError, UsageError
from qa_inspect.reports.data import ReportData
from qa_inspect.reports.mail import SmtpConfig, load_smtp_config, message_id, outbox_rows, send_reports


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """aiosmtpd handler: keeps what arrived; refuses recipients listed in ``refuse``."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = BytesParser(policy=policy.default).parsebytes(envelope.content)
        self.received.append((list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
        return "250 Message accepted"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Recorder, int]]:
    handler = Recorder()
    port = _free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield handler, port
    finally:
        ctl.stop()


def _cfg(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, security="none", **{"from": "qa@reports.example"}, timeout=10)


def _html(msg: EmailMessage) -> str:
    body = msg.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def _attachment(msg: EmailMessage) -> tuple[str, str]:
    atts = list(msg.iter_attachments())
    assert len(atts) == 1
    assert atts[0].get_content_type() == "text/html" and atts[0].get_content_charset() == "utf-8"
    return str(atts[0].get_filename()), str(atts[0].get_content())


FOREIGN = {
    syn.SHOP_A: [syn.AGENT_B1, syn.AGENT_B2, syn.BUYER_B, "小島選物", syn.SHOP_B],
    syn.SHOP_B: [syn.AGENT_A1, syn.BUYER_A, "晨光家居", syn.SHOP_A, "爱买不买"],
}


def test_each_merchant_gets_only_its_own_report(report_data: ReportData,
                                                smtp_server: tuple[Recorder, int]) -> None:
    handler, port = smtp_server
    con = duckdb.connect()
    res = send_reports(report_data, _cfg(port), con=con)
    assert sorted(res.sent) == sorted([(syn.SHOP_A, "owner@chenguang.example"),
                                       (syn.SHOP_A, "ops@chenguang.example"), (syn.SHOP_B, "boss@island.example")])
    assert len(handler.received) == 3
    for rcpts, msg in handler.received:
        assert len(rcpts) == 1 and rcpts == [str(msg["To"])]
        shop = syn.SHOP_A if rcpts[0].endswith("chenguang.example") else syn.SHOP_B
        name = report_data.shops[shop].name
        assert name in str(msg["Subject"]) and report_data.run_id in str(msg["Subject"])
        assert str(msg["Message-ID"]) == message_id(report_data.run_id, shop, rcpts[0], "qa@reports.example")
        html = _html(msg)
        fname, full = _attachment(msg)
        assert fname.endswith(".html") and shop in fname
        for text in (html, full):
            assert name in text
            for marker in [*FOREIGN[shop], syn.BUYER_A, syn.BUYER_B, syn.PHONE_A, syn.PHONE_B]:
                assert marker not in text, (shop, marker)
        # mail body: CSS inlined, no scripts, no SVG
        assert "<script" not in html.lower() and "<svg" not in html.lower() and "<style" not in html
        assert 'style="' in html
        plain = msg.get_body(("plain",))
        assert plain is not None and name in plain.get_content()
    rows = outbox_rows(con, report_data.run_id)
    assert [r["status"] for r in rows] == ["sent"] * 3 and all(r["attempts"] == 1 for r in rows)

    again = send_reports(report_data, _cfg(port), con=con)
    assert again.sent == [] and len(again.skipped) == 3 and len(handler.received) == 3


def test_refused_message_stays_queued_and_is_retried(report_data: ReportData,
                                                     smtp_server: tuple[Recorder, int]) -> None:
    handler, port = smtp_server
    handler.refuse = {"boss@island.example"}
    con = duckdb.connect()
    res = send_reports(report_data, _cfg(port), con=con)
    assert [(s, r) for s, r, _ in res.failed] == [(syn.SHOP_B, "boss@island.example")]
    assert "550" in res.failed[0][2] and "FAILED" in res.summary()
    rows = {r["recipient"]: r for r in outbox_rows(con)}
    assert rows["boss@island.example"]["status"] == "queued"
    assert "550" in rows["boss@island.example"]["last_error"] and rows["boss@island.example"]["attempts"] == 1
    assert len(handler.received) == 2

    handler.refuse = set()
    retry = send_reports(report_data, _cfg(port), con=con)
    assert retry.sent == [(syn.SHOP_B, "boss@island.example")] and len(retry.skipped) == 2
    assert len(handler.received) == 3
    row = {r["recipient"]: r for r in outbox_rows(con)}["boss@island.example"]
    assert row["status"] == "sent" and row["attempts"] == 2 and row["last_error"] is None


def test_unreachable_server_queues_everything_with_the_error(report_data: ReportData) -> None:
    con = duckdb.connect()
    res = send_reports(report_data, _cfg(_free_port()), con=con)
    assert len(res.failed) == 3 and res.sent == []
    assert {r["status"] for r in outbox_rows(con)} == {"queued"}
    assert all(r["last_error"] for r in outbox_rows(con))


def test_dry_run_writes_eml_files_and_sends_nothing(report_data: ReportData, tmp_path: Path) -> None:
    con = duckdb.connect()
    res = send_reports(report_data, None, con=con, dry_run=True, outbox_dir=tmp_path)
    assert len(res.dry_run_files) == 3
    for path in res.dry_run_files:
        assert path.parent == tmp_path and path.suffix == ".eml"
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert str(msg["To"]).split("@")[0] in path.name
        shop = syn.SHOP_A if syn.SHOP_A in path.name else syn.SHOP_B
        assert report_data.shops[shop].name in str(msg["Subject"])
    assert outbox_rows(con) == []
    with pytest.raises(UsageError):
        send_reports(report_data, None, con=con, dry_run=True)


def test_smtp_config_from_file_and_env_never_shows_the_password(tmp_path: Path) -> None:
    f = tmp_path / "smtp.yaml"
    f.write_text("host: mail.example\nport: 465\nsecurity: ssl\nfrom: qa@example.com\nuser: qa\n", encoding="utf-8")
    env = {"QA_INSPECT_SMTP_PASSWORD": "hunter2-secret", "QA_INSPECT_SMTP_PORT": "2465"}
    cfg = load_smtp_config(f, env)
    assert (cfg.host, cfg.port, cfg.security, cfg.user) == ("mail.example", 2465, "ssl", "qa")
    assert cfg.password is not None and cfg.password.get_secret_value() == "hunter2-secret"
    for shown in (repr(cfg), str(cfg), str(cfg.model_dump())):
        assert "hunter2" not in shown

    with pytest.raises(ConfigError, match="HOST"):
        load_smtp_config(None, {"QA_INSPECT_SMTP_FROM": "a@b.c"})
    with pytest.raises(ConfigError) as err:
        load_smtp_config(None, {"QA_INSPECT_SMTP_HOST": "h", "QA_INSPECT_SMTP_FROM": "a@b.c",
                                "QA_INSPECT_SMTP_SECURITY": "tls", "QA_INSPECT_SMTP_PASSWORD": "hunter2"})
    assert "security" in str(err.value) and "hunter2" not in str(err.value)
