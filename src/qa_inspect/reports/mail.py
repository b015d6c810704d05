"""Email each merchant its report, exactly once per run and recipient.

The outbox (DuckDB table ``outbox``) makes sending idempotent: each message has a deterministic
Message-ID from run+shop+recipient, a row reaches status ``sent`` only after the SMTP server
accepted it, and a later call skips ``sent`` rows and retries ``queued`` ones. A message whose
fate cannot be known (the whole body was handed over but no reply came, or the process died
there: status ``unknown``) is never resent silently, only with ``resend_unknown``; see
docs/reports.md. Credentials come from a config file or the environment and never appear in
logs, errors, the outbox or reprs (also not base64-encoded as in an echoed AUTH line).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import smtplib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from qa_inspect.config import config_error_from_validation, load_yaml
from qa_inspect.errors import ConfigError, UsageError
from qa_inspect.reports.data import ReportData, load_report_data
from qa_inspect.reports.labels import labels_for
from qa_inspect.reports.render import Mask, make_env, render_merchant, resolve_mask
from qa_inspect.safe_io import safe_component, safe_path

log = logging.getLogger(__name__)

ENV_PREFIX = "QA_INSPECT_SMTP_"
SMTP_FILE = "smtp.yaml"

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    run_id VARCHAR, shop_id VARCHAR, recipient VARCHAR, subject VARCHAR, status VARCHAR,
    attempts INTEGER, last_error VARCHAR, sent_at TIMESTAMP WITH TIME ZONE, message_id VARCHAR
)
"""


class SmtpConfig(BaseModel):
    """SMTP settings. ``password`` is a SecretStr: repr/str/model_dump show ``**********``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    user: str | None = None
    password: SecretStr | None = None
    from_addr: str = Field(alias="from", pattern=r"^[^@\s<>]+@[^@\s<>]+$")
    timeout: float = Field(default=30.0, gt=0)


def load_smtp_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> SmtpConfig:
    """Settings from ``path`` (YAML with keys host, port, security, user, password, from, timeout),
    overridden by ``QA_INSPECT_SMTP_HOST/PORT/USER/PASSWORD/SECURITY/FROM/TIMEOUT`` from the environment."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    file = str(path) if path else "environment"
    if path is not None and Path(path).exists():
        loaded = load_yaml(Path(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("expected a mapping of SMTP settings", file=file)
        raw.update(loaded or {})
    for key in ("host", "port", "user", "password", "security", "from", "timeout"):
        val = env.get(ENV_PREFIX + key.upper())
        if val:
            raw[key] = val
    if not raw.get("host"):
        raise ConfigError(f"SMTP host not set: set {ENV_PREFIX}HOST or 'host' in {SMTP_FILE}", file=file)
    if not raw.get("from"):
        raise ConfigError(f"sender not set: set {ENV_PREFIX}FROM or 'from' in {SMTP_FILE}", file=file)
    try:
        return SmtpConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error_from_validation(exc, file=file) from None


# --- outbox ---------------------------------------------------------------------------------

def ensure_outbox(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(OUTBOX_DDL)


def outbox_rows(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> list[dict[str, Any]]:
    ensure_outbox(con)
    sql = "SELECT * FROM outbox" + (" WHERE run_id = ?" if run_id else "") + " ORDER BY run_id, shop_id, recipient"
    cur = con.execute(sql, [run_id] if run_id else [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _outbox_get(con: duckdb.DuckDBPyConnection, run_id: str, shop_id: str, rcpt: str) -> dict[str, Any] | None:
    cur = con.execute("SELECT status, attempts, last_error FROM outbox WHERE run_id=? AND shop_id=? AND recipient=?",
                      [run_id, shop_id, rcpt])
    row = cur.fetchone()
    return {"status": row[0], "attempts": row[1] or 0, "last_error": row[2]} if row else None


def _outbox_put(con: duckdb.DuckDBPyConnection, *, run_id: str, shop_id: str, rcpt: str, subject: str,
                status: str, attempts: int, error: str | None, sent_at: datetime | None, message_id: str) -> None:
    key = [run_id, shop_id, rcpt]
    if _outbox_get(con, *key) is None:
        con.execute("INSERT INTO outbox (run_id, shop_id, recipient, subject, status, attempts, last_error, "
                    "sent_at, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [*key, subject, status, attempts, error, sent_at, message_id])
    else:
        con.execute("UPDATE outbox SET subject=?, status=?, attempts=?, last_error=?, sent_at=?, message_id=? "
                    "WHERE run_id=? AND shop_id=? AND recipient=?",
                    [subject, status, attempts, error, sent_at, message_id, *key])


def message_id(run_id: str, shop_id: str, recipient: str, from_addr: str) -> str:
    """Deterministic Message-ID so a duplicate (should one slip through) is recognisable."""
    digest = hashlib.sha256(f"{run_id}\x1f{shop_id}\x1f{recipient}".encode()).hexdigest()[:32]
    domain = from_addr.rsplit("@", 1)[-1] or "qa-inspect.invalid"
    return f"<qa-inspect.{digest}@{domain}>"


# --- message building --------------------------------------------------------------------------

class _Text(HTMLParser):
    """Plain-text alternative from the email HTML (block elements become line breaks)."""

    _BLOCK = {"p", "div", "tr", "h1", "h2", "h3", "li", "br", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append("  ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    p = _Text()
    p.feed(html)
    text = "".join(p.parts).replace("\xa0", " ")
    return re.sub(r"\n\s*\n+", "\n\n", re.sub(r"[ \t]+", " ", text)).strip() + "\n"


def inline_css(html: str) -> str:
    """Inline the <style> rules into style attributes for mail clients (premailer)."""
    import logging as _logging

    import premailer

    return premailer.transform(html, remove_classes=False, keep_style_tags=False,
                               cssutils_logging_level=_logging.CRITICAL, allow_network=False)


def build_message(*, smtp_from: str, recipient: str, subject: str, html: str, attachment: str,
                  attachment_name: str, msg_id: str) -> EmailMessage:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = smtp_from
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = msg_id
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(html_to_text(html))
    msg.add_alternative(html, subtype="html")
    # str (not bytes) so the part carries charset=utf-8 and mail clients decode the CJK text
    msg.add_attachment(attachment, subtype="html", filename=attachment_name)
    return msg


# --- sending ---------------------------------------------------------------------------------

@dataclass
class SendResult:
    """What happened, for the CLI summary.

    ``failed`` holds (shop, recipient, error) of messages that were certainly NOT accepted (they
    stay ``queued`` and are retried by the next send); ``unknown`` those the server may or may not
    have accepted (connection lost / timed out after the whole message was handed over, or a run
    that crashed there): they are only resent with ``resend_unknown``.
    """

    sent: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    unknown: list[tuple[str, str, str]] = field(default_factory=list)
    dry_run_files: list[Path] = field(default_factory=list)
    no_recipients: list[str] = field(default_factory=list)
    pending_other_runs: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unknown

    def summary(self) -> str:
        lines = [f"sent {len(self.sent)}, already sent {len(self.skipped)}, failed {len(self.failed)}"
                 + (f", delivery unknown {len(self.unknown)}" if self.unknown else "")
                 + (f", dry-run files {len(self.dry_run_files)}" if self.dry_run_files else "")]
        lines += [f"  FAILED {s} -> {r}: {e} (queued; retried on the next send)" for s, r, e in self.failed]
        lines += [f"  UNKNOWN {s} -> {r}: {e} (the server may have it; check with the recipient, "
                  "then resend with --resend-unknown)" for s, r, e in self.unknown]
        lines += [f"  no recipients configured for shop {s}" for s in self.no_recipients]
        if self.pending_other_runs:
            lines.append(f"  {self.pending_other_runs} message(s) of other runs are still queued")
        return "\n".join(lines)


def _open(smtp: SmtpConfig) -> smtplib.SMTP:
    ctx = ssl.create_default_context()
    if smtp.security == "ssl":
        conn: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=ctx)
    else:
        conn = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        conn.ehlo()
        if smtp.security == "starttls":
            conn.starttls(context=ctx)
            conn.ehlo()
    if smtp.user:
        conn.login(smtp.user, smtp.password.get_secret_value() if smtp.password else "")
    return conn


def _secrets(smtp: SmtpConfig | None) -> list[str]:
    """The password and the forms it travels in (AUTH PLAIN / LOGIN base64) for scrubbing."""
    if smtp is None or smtp.password is None or not smtp.password.get_secret_value():
        return []
    pw = smtp.password.get_secret_value()
    user = smtp.user or ""
    forms = [pw, base64.b64encode(pw.encode()).decode(),
             base64.b64encode(f"\0{user}\0{pw}".encode()).decode(),
             base64.b64encode(f"{user}\0{user}\0{pw}".encode()).decode()]
    return sorted({f for f in forms if f}, key=len, reverse=True)


def _err(exc: BaseException, smtp: SmtpConfig | None) -> str:
    """One-line error text for the outbox, logs and the summary, with the password scrubbed.

    SMTP replies arrive as bytes (``b'...'``); they are decoded so a secret echoed by a server
    cannot hide from the scrubber inside a bytes repr.
    """
    args = [a.decode("utf-8", "replace") if isinstance(a, bytes) else a for a in exc.args]
    text = f"{type(exc).__name__}: " + (" ".join(str(a) for a in args) if args else str(exc))
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = f"{type(exc).__name__}: " + "; ".join(
            f"{r}: {c} {m.decode('utf-8', 'replace') if isinstance(m, bytes) else m}"
            for r, (c, m) in exc.recipients.items())
    for secret in _secrets(smtp):
        text = text.replace(secret, "**********")
    return " ".join(text.split())[:500]


class _Unknown(Exception):
    """The whole message was handed to the server but its reply never came (timeout/disconnect)."""


def _payload(msg: EmailMessage) -> bytes:
    """The DATA payload: CRLF lines, leading dots doubled, terminated by ``CRLF.CRLF``."""
    data = re.sub(rb"(?m)^\.", b"..", msg.as_bytes(policy=SMTP_POLICY))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _transmit(conn: smtplib.SMTP, from_addr: str, rcpt: str, msg: EmailMessage,
              before_body: Callable[[], None]) -> None:
    """MAIL, RCPT, DATA step by step (not ``send_message``) so that a failure before the body
    was handed over (certainly not delivered) is told apart from a missing final reply (maybe
    delivered). ``before_body`` records the 'sending' state first."""
    payload = _payload(msg)
    opts = ["BODY=8BITMIME"] if (not payload.isascii() and conn.has_extn("8bitmime")) else []
    code, resp = conn.mail(from_addr, opts)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, resp, from_addr)
    code, resp = conn.rcpt(rcpt)
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({rcpt: (code, resp)})
    code, resp = conn.docmd("DATA")
    if code != 354:
        raise smtplib.SMTPDataError(code, resp)
    before_body()
    conn.send(payload)  # OSError here -> SMTPServerDisconnected: the server never got the end
    try:
        code, resp = conn.getreply()
    except (OSError, smtplib.SMTPException) as exc:
        raise _Unknown(str(exc) or type(exc).__name__) from exc
    if code != 250:
        raise smtplib.SMTPDataError(code, resp)


def send_reports(source: ReportData | duckdb.DuckDBPyConnection | Path, smtp: SmtpConfig | None, *,
                 run_id: str | None = None, shops: dict[str, Any] | None = None,
                 con: duckdb.DuckDBPyConnection | None = None, dry_run: bool = False,
                 outbox_dir: Path | None = None, mask: Mask | None = None,
                 resend_unknown: bool = False) -> SendResult:
    """Send every shop with recipients its masked report (HTML body + full report attached).

    ``source`` is a ReportData, or the store (a DuckDB connection or file) plus ``run_id`` and
    ``shops``. The outbox lives in ``con`` (default: the store). ``dry_run`` writes .eml files to
    ``outbox_dir`` and neither contacts a server nor changes the outbox. Messages whose delivery
    is unknown (see docs/reports.md) are resent only with ``resend_unknown``.
    """
    own_con = False
    if isinstance(source, ReportData):
        data = source
    else:
        if not run_id:
            raise UsageError("send: a run id is needed when reading from the store")
        if isinstance(source, Path | str):
            if not Path(source).exists():
                raise UsageError(f"store not found: {source}")
            source = duckdb.connect(str(source))
            own_con = True
        con = con or source
        data = load_report_data(source, run_id, shops or {})
    if not dry_run and smtp is None:
        raise UsageError("send: SMTP settings are needed unless --dry-run")
    if dry_run and outbox_dir is None:
        raise UsageError("send --dry-run needs an outbox folder for the .eml files")
    if not dry_run and con is None:
        raise UsageError("send: an outbox store (DuckDB connection) is needed to avoid duplicates")
    from_addr = smtp.from_addr if smtp else "qa-inspect@localhost.invalid"
    pii = resolve_mask(mask)
    env = make_env()
    result = SendResult()
    try:
        if con is not None:
            ensure_outbox(con)
            if not dry_run:
                # A previous run stopped between handing a message over and recording the reply.
                con.execute("UPDATE outbox SET status='unknown', last_error=? WHERE status='sending' AND run_id=?",
                            [CRASHED, data.run_id])
        todo: list[tuple[str, str, EmailMessage]] = []
        for shop_id in data.shop_ids():
            shop = data.shops.get(shop_id)
            if shop is None or not shop.recipients:
                result.no_recipients.append(shop_id)
                continue
            L = labels_for(shop.locale)
            subject = f"{L['mail_subject']} · {shop.name} · {data.run_id}"
            body = inline_css(render_merchant(data, shop_id, mask=pii, env=env, email=True))
            full = render_merchant(data, shop_id, mask=pii, env=env, email=False)
            for rcpt in shop.recipients:
                mid = message_id(data.run_id, shop_id, rcpt, from_addr)
                row = _outbox_get(con, data.run_id, shop_id, rcpt) if con is not None else None
                if row is not None and row["status"] == "sent":
                    result.skipped.append((shop_id, rcpt))
                    continue
                if row is not None and row["status"] == "unknown" and not resend_unknown:
                    result.unknown.append((shop_id, rcpt, row["last_error"] or CRASHED))
                    continue
                msg = build_message(smtp_from=from_addr, recipient=rcpt, subject=subject, html=body,
                                    attachment=full,
                                    attachment_name=f"{safe_component(shop_id)}-{safe_component(data.run_id)}.html",
                                    msg_id=mid)
                if dry_run:
                    assert outbox_dir is not None
                    folder = Path(outbox_dir)
                    folder.mkdir(parents=True, exist_ok=True)
                    path = safe_path(folder, f"{data.run_id}__{shop_id}__{rcpt}", suffix=".eml")
                    path.write_bytes(msg.as_bytes())
                    result.dry_run_files.append(path)
                    continue
                assert con is not None
                _outbox_put(con, run_id=data.run_id, shop_id=shop_id, rcpt=rcpt, subject=subject,
                            status="queued", attempts=(row or {}).get("attempts", 0),
                            error=(row or {}).get("last_error"), sent_at=None, message_id=mid)
                todo.append((shop_id, rcpt, msg))
        if todo:
            assert smtp is not None and con is not None
            _deliver(todo, smtp, con, data.run_id, result)
        if con is not None:
            result.pending_other_runs = int(con.execute(
                "SELECT count(*) FROM outbox WHERE status <> 'sent' AND run_id <> ?", [data.run_id]).fetchone()[0])
    finally:
        if own_con and con is not None:
            con.close()
    return result


CRASHED = ("delivery unknown: a previous send stopped after handing the message to the server "
           "and before its reply was recorded")


def _deliver(todo: list[tuple[str, str, EmailMessage]], smtp: SmtpConfig, con: duckdb.DuckDBPyConnection,
             run_id: str, result: SendResult) -> None:
    """One SMTP session for all messages.

    Outbox states: ``queued`` -> ``sending`` (just before the body leaves) -> ``sent`` (server
    replied 250) | ``queued`` (refused, or failed before the body was complete: retried next
    time) | ``unknown`` (no reply after the complete body: maybe delivered, never resent
    automatically). After a lost connection the remaining messages stay queued.
    """
    def set_status(shop_id: str, rcpt: str, status: str, error: str | None, *, attempt: bool) -> None:
        row = _outbox_get(con, run_id, shop_id, rcpt) or {"attempts": 0, "status": None}
        attempt = attempt and row["status"] != "sending"  # 'sending' already counted this attempt
        con.execute("UPDATE outbox SET status=?, attempts=?, last_error=?, sent_at=? "
                    "WHERE run_id=? AND shop_id=? AND recipient=?",
                    [status, row["attempts"] + (1 if attempt else 0), error,
                     datetime.now(UTC) if status == "sent" else None, run_id, shop_id, rcpt])

    def fail(shop_id: str, rcpt: str, error: str, *, attempt: bool = True) -> None:
        set_status(shop_id, rcpt, "queued", error, attempt=attempt)
        result.failed.append((shop_id, rcpt, error))
        log.warning("send to %s (shop %s) failed: %s", rcpt, shop_id, error)

    try:
        conn = _open(smtp)
    except (OSError, smtplib.SMTPException) as exc:
        for shop_id, rcpt, _ in todo:
            fail(shop_id, rcpt, _err(exc, smtp))
        return
    try:
        for i, (shop_id, rcpt, msg) in enumerate(todo):
            try:
                _transmit(conn, smtp.from_addr, rcpt, msg,
                          lambda s=shop_id, r=rcpt: set_status(s, r, "sending", None, attempt=True))  # type: ignore[misc]
            except _Unknown as exc:
                error = f"delivery unknown: no reply after the message was sent ({_err(exc, smtp)})"
                set_status(shop_id, rcpt, "unknown", error, attempt=False)
                result.unknown.append((shop_id, rcpt, error))
                log.warning("send to %s (shop %s): %s", rcpt, shop_id, error)
                for s, r, _ in todo[i + 1:]:
                    fail(s, r, "not attempted: the SMTP connection was lost", attempt=False)
                return
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError,
                    UnicodeError) as exc:  # UnicodeError: a non-ASCII address the session cannot carry
                fail(shop_id, rcpt, _err(exc, smtp))
                try:
                    conn.rset()
                except (OSError, smtplib.SMTPException):
                    pass  # the server dropped us (e.g. after 421); the next message fails cleanly
                continue
            except (OSError, smtplib.SMTPException) as exc:
                fail(shop_id, rcpt, _err(exc, smtp))
                for s, r, _ in todo[i + 1:]:
                    fail(s, r, f"not attempted: {_err(exc, smtp)}", attempt=False)
                return
            set_status(shop_id, rcpt, "sent", None, attempt=False)
            result.sent.append((shop_id, rcpt))
            log.info("sent report of shop %s to %s", shop_id, rcpt)
    finally:
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()
