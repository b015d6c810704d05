"""Mail under faults, against a real aiosmtpd server on loopback started by this test module.

Invariants checked for every fault: no report is lost (it stays in the outbox as ``queued`` or
``unknown``, is listed in the result and makes ``ok`` false / the exit code 1), none is delivered
twice unless ``resend_unknown`` is asked for, and the password never shows up anywhere we write.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path
from typing import Any

import duckdb
import pytest
import synthetic as syn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from qa_inspect.reports.data import ReportData, for_shop
from qa_inspect.reports.mail import CRASHED, SmtpConfig, outbox_rows, send_reports

CLIENT_TIMEOUT = 1.5  # small, but large enough for a loaded 2-core machine
TIMEOUT_FAULTS = {"timeout_rcpt", "timeout_data"}
RCPTS = ["r1@island.example", "r2@island.example", "r3@island.example"]
USER, PASSWORD = "qa-bot", "hunter2-S3cret!x"
SECRET_FORMS = [PASSWORD, base64.b64encode(PASSWORD.encode()).decode(),
                base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()]


class FaultHandler:
    """Records accepted messages by Message-ID; misbehaves for the recipients in ``faults``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []  # (recipient, Message-ID)
        self.faults: dict[str, str] = {}
        self.echo_secret = False
        self.on_accept: Any = None

    def count(self) -> Counter[str]:
        return Counter(rcpt for rcpt, _ in self.received)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, opts: Any) -> str:
        fault = self.faults.get(address)
        if fault == "rcpt_550":
            # a misbehaving server that echoes what it got, password included
            return f"550 5.1.1 unknown mailbox (auth {PASSWORD})" if self.echo_secret else "550 5.1.1 no such user"
        if fault == "rcpt_451":
            return "451 4.3.0 try again later"
        if fault == "rcpt_421":  # a real server closes the connection after 421
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.3.2 service shutting down"
        if fault == "timeout_rcpt":
            await asyncio.sleep(60)  # cancelled when the client hangs up
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0]
        fault = self.faults.get(rcpt)
        if fault == "data_451":
            return "451 4.7.1 greylisted"
        if fault == "data_554":
            return "554 5.6.0 content rejected"
        if fault == "drop_data":  # whole message received, connection dropped without a reply
            server.transport.abort()
            await asyncio.sleep(10)
        mid = str(message_from_bytes(envelope.content)["Message-ID"])
        self.received.append((rcpt, mid))  # accepted from here on
        if fault == "timeout_data":  # accepted, but the 250 comes after the client gave up
            await asyncio.sleep(60)  # cancelled when the client hangs up
        if self.on_accept is not None:
            self.on_accept()
            await asyncio.sleep(0.3)
        return "250 Message accepted"


class DropMidBodySMTP(SMTP):
    """Closes the connection right after ``354`` for a recipient with the ``drop_mid_body`` fault."""

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if envelope is not None and envelope.rcpt_tos and \
                self.event_handler.faults.get(envelope.rcpt_tos[0]) == "drop_mid_body":
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readuntil(b"\r\n")
            assert self.transport is not None
            self.transport.abort()
            return
        await super().smtp_DATA(arg)


class FaultController(Controller):
    def factory(self) -> SMTP:
        return DropMidBodySMTP(self.handler, **self.SMTP_kwargs)


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    handler: FaultHandler = server.event_handler
    login = data.login.decode() if isinstance(data.login, bytes) else str(data.login)
    pw = data.password.decode() if isinstance(data.password, bytes) else str(data.password)
    if handler.faults.get("auth") == "reject":  # misbehaving: echoes the credentials it got
        blob = base64.b64encode(f"\0{login}\0{pw}".encode()).decode()
        return AuthResult(success=False, handled=False, message=f"535 5.7.8 bad credentials {pw} {blob}")
    return AuthResult(success=login == USER and pw == PASSWORD)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[tuple[FaultHandler, int]]:
    handler = FaultHandler()
    port = _free_port()
    ctl = FaultController(handler, hostname="127.0.0.1", port=port, authenticator=_authenticator,
                          auth_require_tls=False)
    ctl.start()
    try:
        yield handler, port
    finally:
        ctl.stop()


@pytest.fixture(scope="module")
def one_shop() -> ReportData:
    """Shop B only, three recipients: one render per send keeps these tests fast."""
    data = for_shop(syn.build_report_data(), syn.SHOP_B)
    shop = data.shops[syn.SHOP_B].model_copy(update={"recipients": list(RCPTS)})
    return replace(data, shops={syn.SHOP_B: shop})


def _cfg(port: int, timeout: float = 30.0) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, security="none", user=USER, password=PASSWORD,
                      timeout=timeout, **{"from": "qa@reports.example"})


def _status(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return {r["recipient"]: r["status"] for r in outbox_rows(con)}


def _no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRET_FORMS:
            assert secret not in text, f"secret {secret[:4]}… leaked: {text[:300]}"


def _visible(caplog: pytest.LogCaptureFixture, con: duckdb.DuckDBPyConnection, *results: Any) -> list[str]:
    """Everything we log, record or print. The test server's own logger (mail.log) is excluded:
    it logs the AUTH exchange itself and is not our code."""
    logs = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    return ["\n".join(logs), repr(outbox_rows(con)), *(r.summary() for r in results), *(repr(r) for r in results)]


# --- refusals ----------------------------------------------------------------------------------

def test_refusals_stay_queued_and_are_retried_exactly_once(one_shop: ReportData, tmp_path: Path,
                                                           server: tuple[FaultHandler, int],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handler, port = server
    data = replace(one_shop, shops={syn.SHOP_B: one_shop.shops[syn.SHOP_B].model_copy(
        update={"recipients": [*RCPTS, "r4@island.example", "r5@island.example"]})})
    handler.faults = {"r1@island.example": "rcpt_550", "r2@island.example": "data_451",
                      "r3@island.example": "rcpt_451", "r4@island.example": "data_554"}
    handler.echo_secret = True
    con = duckdb.connect()
    first = send_reports(data, _cfg(port), con=con)
    assert first.sent == [(syn.SHOP_B, "r5@island.example")] and not first.ok
    errors = {r: e for _, r, e in first.failed}
    assert set(errors) == {f"r{i}@island.example" for i in range(1, 5)}
    for rcpt, code in (("r1", "550"), ("r2", "451"), ("r3", "451"), ("r4", "554")):
        assert code in errors[f"{rcpt}@island.example"]
    assert _status(con) == {**{f"r{i}@island.example": "queued" for i in range(1, 5)}, "r5@island.example": "sent"}
    assert handler.count() == Counter({"r5@island.example": 1})

    handler.faults = {}
    second = send_reports(data, _cfg(port), con=con)
    assert len(second.sent) == 4 and second.skipped == [(syn.SHOP_B, "r5@island.example")] and second.ok
    third = send_reports(data, _cfg(port), con=con)
    assert third.sent == [] and len(third.skipped) == 5
    assert set(handler.count().values()) == {1} and len(handler.received) == 5
    assert len({mid for _, mid in handler.received}) == 5
    rows = {r["recipient"]: r for r in outbox_rows(con)}
    assert rows["r1@island.example"]["attempts"] == 2 and rows["r5@island.example"]["attempts"] == 1
    _no_secret(*_visible(caplog, con, first, second, third), *[str(e) for *_, e in first.failed])


# --- connection faults ---------------------------------------------------------------------------

# fault on r2 -> what r2's outbox row may be after the first send
CONNECTION_FAULTS = {
    "rcpt_421": {"queued"},
    "timeout_rcpt": {"queued"},
    "drop_mid_body": {"queued", "unknown"},  # the client cannot always tell (body may be buffered)
    "drop_data": {"unknown"},
    "timeout_data": {"unknown"},
}


@pytest.mark.parametrize("fault", list(CONNECTION_FAULTS))
def test_connection_faults_lose_nothing_and_send_nothing_twice(fault: str, one_shop: ReportData,
                                                               server: tuple[FaultHandler, int],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handler, port = server
    r1, r2, r3 = RCPTS
    handler.faults = {r2: fault}
    con = duckdb.connect()
    t0 = time.monotonic()
    first = send_reports(one_shop, _cfg(port, CLIENT_TIMEOUT if fault in TIMEOUT_FAULTS else 30.0), con=con)
    if fault in TIMEOUT_FAULTS:  # the configured client timeout is honoured (the server waits 60 s)
        assert time.monotonic() - t0 < 20
    status = _status(con)
    assert status[r1] == "sent" and status[r3] == "queued" and status[r2] in CONNECTION_FAULTS[fault]
    assert not first.ok and first.sent == [(syn.SHOP_B, r1)]
    reported = {r for _, r, _ in first.failed} | {r for _, r, _ in first.unknown}
    assert reported == {r2, r3}  # nothing silently dropped
    server_has_r2 = fault == "timeout_data"  # the server accepted it, we never saw the 250
    assert handler.count() == Counter({r1: 1, **({r2: 1} if server_has_r2 else {})})

    handler.faults = {}
    second = send_reports(one_shop, _cfg(port), con=con)
    if status[r2] == "unknown":
        # maybe delivered: not resent automatically, still reported (exit code 1)
        assert second.sent == [(syn.SHOP_B, r3)] and [r for _, r, _ in second.unknown] == [r2] and not second.ok
        assert "--resend-unknown" in second.summary() and _status(con)[r2] == "unknown"
        third = send_reports(one_shop, _cfg(port), con=con, resend_unknown=True)
        assert third.sent == [(syn.SHOP_B, r2)] and third.ok
    else:
        assert sorted(second.sent) == [(syn.SHOP_B, r2), (syn.SHOP_B, r3)] and second.ok
        third = second  # re-running once everything is sent is covered by the refusal test
    assert set(_status(con).values()) == {"sent"}
    expected = Counter({r1: 1, r2: 2 if server_has_r2 else 1, r3: 1})  # the only duplicate: asked for
    assert handler.count() == expected
    if server_has_r2:  # the explicit resend carries the same Message-ID, so mail clients can dedupe
        assert len({mid for rcpt, mid in handler.received if rcpt == r2}) == 1
    _no_secret(*_visible(caplog, con, first, second, third))


def test_rejected_login_is_reported_without_the_credentials(one_shop: ReportData, server: tuple[FaultHandler, int],
                                                            caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    handler, port = server
    handler.faults = {"auth": "reject"}
    con = duckdb.connect()
    res = send_reports(one_shop, _cfg(port), con=con)
    assert len(res.failed) == 3 and all("535" in e for *_, e in res.failed) and handler.received == []
    assert all(r["status"] == "queued" and "535" in r["last_error"] for r in outbox_rows(con))
    dry = send_reports(one_shop, _cfg(port), con=con, dry_run=True, outbox_dir=tmp_path)
    _no_secret(*_visible(caplog, con, res, dry), *(p.read_bytes().decode("ascii", "replace") for p in dry.dry_run_files))
    assert len(dry.dry_run_files) == 3
    # the server really echoed them: the check above is not vacuous
    server_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mail.log"))
    assert PASSWORD in server_log and SECRET_FORMS[2] in server_log


class Crash(BaseException):
    """Stands for the process dying (kill, OOM, power) between the server's 250 and our update."""


def test_crash_after_server_accepted_is_never_resent_silently(one_shop: ReportData, tmp_path: Path,
                                                              server: tuple[FaultHandler, int]) -> None:
    handler, port = server
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main

    def crash(signum: int, frame: Any) -> None:
        raise Crash

    old = signal.signal(signal.SIGUSR1, crash)
    handler.on_accept = lambda: (setattr(handler, "on_accept", None), signal.pthread_kill(main, signal.SIGUSR1))
    con = duckdb.connect(str(tmp_path / "store.duckdb"))
    try:
        with pytest.raises(Crash) as info:
            send_reports(one_shop, _cfg(port), con=con)
    finally:
        signal.signal(signal.SIGUSR1, old)
    _no_secret("".join(traceback.format_exception(info.value)))
    assert handler.count() == Counter({RCPTS[0]: 1})  # the server has the first one
    assert _status(con) == {RCPTS[0]: "sending", RCPTS[1]: "queued", RCPTS[2]: "queued"}
    con.close()

    con = duckdb.connect(str(tmp_path / "store.duckdb"))  # "next run"
    after = send_reports(one_shop, _cfg(port), con=con)
    assert sorted(after.sent) == [(syn.SHOP_B, RCPTS[1]), (syn.SHOP_B, RCPTS[2])]
    assert after.unknown == [(syn.SHOP_B, RCPTS[0], CRASHED)] and not after.ok
    assert handler.count() == Counter(dict.fromkeys(RCPTS, 1))  # no duplicate
    again = send_reports(one_shop, _cfg(port), con=con)
    assert again.sent == [] and len(again.unknown) == 1 and handler.count()[RCPTS[0]] == 1
    forced = send_reports(one_shop, _cfg(port), con=con, resend_unknown=True)
    assert forced.sent == [(syn.SHOP_B, RCPTS[0])] and forced.ok and _status(con)[RCPTS[0]] == "sent"
