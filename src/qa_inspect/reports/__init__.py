"""HTML reports (agents, merchants, supervisor overview, coaching pack) and merchant email.

The names below are loaded on first use: the nightly run imports ``reports.data`` and
``reports.render`` only, and should not pay for the mail stack (premailer, cssutils) it never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from qa_inspect.reports.stats import FindingStats, finding_stats

_HOME = {
    "ReportData": "data", "buyers_of": "data", "for_shop": "data", "load_needed_messages": "data",
    "load_report_data": "data", "needed_only": "data",
    "SendResult": "mail", "SmtpConfig": "mail", "load_smtp_config": "mail", "send_reports": "mail",
    "ReportIndex": "render", "needed_conversations": "render", "render_merchant": "render",
    "render_reports": "render",
    "FindingStats": "stats", "finding_stats": "stats",
}

__all__ = [
    "FindingStats",
    "ReportData",
    "ReportIndex",
    "SendResult",
    "SmtpConfig",
    "buyers_of",
    "finding_stats",
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


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"qa_inspect.reports.{_HOME[name]}"), name)
