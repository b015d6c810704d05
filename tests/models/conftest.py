"""Fixtures for the model tests: the shipped act model, thresholds and a small labelled slice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from qa_inspect.models import Models, load_models, load_thresholds
from qa_inspect.models.thresholds import ModelsConfig

LABELLED_CSV = Path(__file__).resolve().parents[2] / "src" / "qa_inspect" / "data" / "acts_labelled.csv"


@pytest.fixture(scope="session")
def shipped() -> Models:
    return load_models(None)


@pytest.fixture(scope="session")
def thresholds(rules_dir: Path) -> ModelsConfig:
    return load_thresholds(rules_dir)


@pytest.fixture(scope="session")
def labelled_slice() -> pd.DataFrame:
    df = pd.read_csv(LABELLED_CSV, dtype=str, keep_default_na=False)
    return df.sample(240, random_state=3).reset_index(drop=True)
