"""Which model folders a run uses, without importing scikit-learn or unpickling anything.

The client of a pool run only needs the folders (their cards go into the configuration version
that workers are checked against); the workers load the models themselves. Importing
``qa_inspect.models`` costs ~0.8 s (scikit-learn, scipy), so this lives outside that package.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from qa_inspect.errors import UserError

CARD_FILE = "card.json"


def default_acts_dir() -> Path:
    """The shipped act model (trained on data/acts_labelled.csv)."""
    return Path(str(resources.files("qa_inspect") / "data" / "models" / "acts"))


def card_kind(model_dir: Path) -> str:
    """The ``kind`` of a model card, read without validating the rest (load_model does that)."""
    path = Path(model_dir) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: invalid model card: {exc}") from None
    return str(card.get("kind", "")) if isinstance(card, dict) else ""


def resolve_model_dirs(models_dir: Path | None) -> tuple[Path, Path | None]:
    """(act model folder, risk model folder or None). ``None`` -> the shipped act model, no risk
    model. A folder either holds one model (``card.json`` + ``model.joblib``, kind from the card)
    or ``acts/`` and/or ``risk/`` sub-folders; without an act model there the shipped one is used."""
    acts_dir = default_acts_dir()
    risk_dir: Path | None = None
    if models_dir is None:
        return acts_dir, risk_dir
    d = Path(models_dir)
    if not d.is_dir():
        raise UserError(f"models folder not found: {d}")
    if (d / CARD_FILE).is_file():
        kind = card_kind(d)
        if kind == "acts":
            return d, None
        if kind == "risk":
            return acts_dir, d
        raise UserError(f"{d}: unknown model kind '{kind}'")
    if (d / "acts" / CARD_FILE).is_file():
        acts_dir = d / "acts"
    if (d / "risk" / CARD_FILE).is_file():
        risk_dir = d / "risk"
    if acts_dir == default_acts_dir() and risk_dir is None:
        raise UserError(f"{d}: no model found (expected card.json, or acts/ or risk/ sub-folders)")
    return acts_dir, risk_dir


def card_files(models_dir: Path | None) -> list[Path]:
    """The card files of the models a run uses (for the configuration version)."""
    return [d / CARD_FILE for d in resolve_model_dirs(models_dir) if d is not None]
