"""Shared fixtures: repo paths and the real research data (skipped when absent)."""

from __future__ import annotations

import os
import shutil
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


NIGHT1 = ("tmall_yuejia_qianniu_2026-11-23.txt", "jd_jike_2026-11-23.xlsx", "tw_meiyan_2026-11-23.jsonl")


@pytest.fixture(scope="session")
def night1(sample_logs_dir: Path) -> list[Path]:
    """One night of the three sample shops in three import formats (120 conversations)."""
    return [sample_logs_dir / f for f in NIGHT1]


@pytest.fixture(scope="module")
def frozen_rules(rules_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of rules/, so every run in a module sees the same rule-set version."""
    dest = tmp_path_factory.mktemp("rules") / "rules"
    shutil.copytree(rules_dir, dest)
    return dest
