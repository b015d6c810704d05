"""Shared fixtures: repo paths and the real research data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "rules"
SAMPLE_LOGS = REPO / "sample_logs"


def shared_data_dir() -> Path:
    """``../shared/data`` beside the clone (or $QA_INSPECT_SHARED_DATA)."""
    env = os.environ.get("QA_INSPECT_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real research data not present at {path}")
    return path


@pytest.fixture(scope="session")
def rules_dir() -> Path:
    return RULES


@pytest.fixture(scope="session")
def sample_logs_dir() -> Path:
    return SAMPLE_LOGS
