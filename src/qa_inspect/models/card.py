"""Model cards: what a saved model was trained on and with which code, checked before loading.

A pickled scikit-learn object silently misbehaves when loaded under another sklearn version or
when the feature code changed; the card lets ``load`` refuse such a model with a clear message
instead of scoring agents with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import joblib
import sklearn
from pydantic import BaseModel, ConfigDict, ValidationError

from qa_inspect import __version__
from qa_inspect.errors import UserError
from qa_inspect.modeldirs import CARD_FILE

__all__ = ["CARD_FILE", "MODEL_FILE", "ModelCard", "check_card", "load_model", "new_card", "read_card", "save_model"]

MODEL_FILE = "model.joblib"


def major_minor(version: str) -> str:
    parts = version.split("+")[0].split(".")
    return ".".join(parts[:2])


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str  # "acts" | "risk"
    name: str
    qa_inspect_version: str
    sklearn_version: str
    feature_set: str
    training_data: list[str]
    training_data_sha256: str
    n_train: int
    classes: list[str]
    random_state: int
    created: str
    metrics: dict[str, Any]
    notes: str = ""


def data_hash(frame_bytes: bytes) -> str:
    return hashlib.sha256(frame_bytes).hexdigest()


def new_card(*, kind: str, name: str, feature_set: str, training_data: list[str], data_sha256: str,
             n_train: int, classes: list[str], random_state: int, metrics: dict[str, Any],
             notes: str = "") -> ModelCard:
    return ModelCard(
        kind=kind, name=name, qa_inspect_version=__version__, sklearn_version=sklearn.__version__,
        feature_set=feature_set, training_data=training_data, training_data_sha256=data_sha256,
        n_train=n_train, classes=classes, random_state=random_state,
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), metrics=metrics, notes=notes,
    )


def save_model(model: object, card: ModelCard, out_dir: Path) -> Path:
    """Write ``model.joblib`` and ``card.json`` into ``out_dir`` (created)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out_dir / MODEL_FILE, compress=3)
    (out_dir / CARD_FILE).write_text(json.dumps(card.model_dump(), ensure_ascii=False, indent=2) + "\n",
                                     encoding="utf-8")
    return out_dir


def read_card(model_dir: Path) -> ModelCard:
    path = Path(model_dir) / CARD_FILE
    if not path.is_file():
        raise UserError(f"{path}: model card missing; a model is only loaded together with its card.json")
    try:
        return ModelCard.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise UserError(f"{path}: invalid model card: {exc}") from None


def check_card(card: ModelCard, *, kind: str, feature_set: str, where: Path) -> None:
    """Refuse a model built by another qa-inspect major.minor, sklearn version or feature code."""
    problems = []
    if card.kind != kind:
        problems.append(f"it is a '{card.kind}' model, expected '{kind}'")
    if major_minor(card.qa_inspect_version) != major_minor(__version__):
        problems.append(f"trained with qa-inspect {card.qa_inspect_version}, installed {__version__}")
    if card.sklearn_version != sklearn.__version__:
        problems.append(f"trained with scikit-learn {card.sklearn_version}, installed {sklearn.__version__}")
    if card.feature_set != feature_set:
        problems.append(f"feature set '{card.feature_set}' differs from this code's '{feature_set}'")
    if problems:
        raise UserError(f"{where}: refusing to load model: " + "; ".join(problems)
                        + ". Retrain it with 'qa-inspect train'.")


def load_model(model_dir: Path, *, kind: str, feature_set: str) -> tuple[Any, ModelCard]:
    """Check the card, then unpickle. Only call on folders the user pointed at (pickle runs code)."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    check_card(card, kind=kind, feature_set=feature_set, where=model_dir)
    path = model_dir / MODEL_FILE
    if not path.is_file():
        raise UserError(f"{path}: model file missing")
    return joblib.load(path), card
