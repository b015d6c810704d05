"""HTML reports (agents, merchants, supervisor overview, coaching pack) and merchant email."""

from __future__ import annotations

from qa_inspect.reports.data import (
    ReportData,
    buyers_of,
    for_shop,
    load_needed_messages,
    load_report_data,
    needed_only,
)
from qa_inspect.reports.mail import SendResult, SmtpConfig, load_smtp_config, send_reports
from qa_inspect.reports.render import ReportIndex, needed_conversations, render_merchant, render_reports

__all__ = [
    "ReportData",
    "ReportIndex",
    "SendResult",
    "SmtpConfig",
    "buyers_of",
    "for_shop",
    "load_needed_messages",
    "load_report_data",
    "load_smtp_config",
    "needed_conversations",
    "needed_only",
    "render_merchant",
    "render_reports",
    "send_reports",
]
