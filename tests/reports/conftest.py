"""Fixtures for the report tests; the synthetic data itself lives in synthetic.py."""

from __future__ import annotations

from typing import Any

import pytest
from synthetic import build_report_data

from qa_inspect.reports.data import ReportData


@pytest.fixture
def report_data() -> ReportData:
    return build_report_data()


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Reports rendered once per session (rendering charts costs ~1 s)."""
    from qa_inspect.reports import render_reports

    out = tmp_path_factory.mktemp("reports")
    return render_reports(build_report_data(), out)
