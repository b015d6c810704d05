"""HTML reports (agents, merchants, supervisor overview, coaching pack) and merchant email."""

from __future__ import annotations

from qa_inspect.reports.data import ReportData, for_shop, load_report_data
from qa_inspect.reports.mail import SendResult, SmtpConfig, load_smtp_config, send_reports
from qa_inspect.reports.render import ReportIndex, render_merchant, render_reports

__all__ = [
    "ReportData",
    "ReportIndex",
    "SendResult",
    "SmtpConfig",
    "for_shop",
    "load_report_data",
    "load_smtp_config",
    "render_merchant",
    "render_reports",
    "send_reports",
]
