"""Training entry points behind ``qa-inspect train acts|risk``: read data, fit, write model + card."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from qa_inspect import schema
from qa_inspect.errors import InputError, UsageError
from qa_inspect.models.acts import GROUP_COLUMN, LABELS_COLUMN, train_acts
from qa_inspect.models.card import ModelCard, new_card, save_model
from qa_inspect.models.features import ACT_FEATURE_SET, RISK_FEATURE_SET, ensure_text_columns
from qa_inspect.models.risk import TARGET, train_risk

StcTarget = Literal["S", "SAE"]


@dataclass
class TrainResult:
    out_dir: Path
    card: ModelCard
    metrics: pd.DataFrame  # printable table


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def read_act_labels(paths: list[Path]) -> pd.DataFrame:
    """Concatenate labelled CSVs (``text``, ``labels``; optional ``group``, ``kind``)."""
    frames = []
    for p in paths:
        if not p.is_file():
            raise InputError("file not found", file=str(p))
        df = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        for col in (schema.TEXT, LABELS_COLUMN):
            if col not in df.columns:
                raise InputError(f"missing column '{col}' (need text, labels)", file=str(p), line=1)
        if GROUP_COLUMN in df.columns:
            df[GROUP_COLUMN] = p.name + ":" + df[GROUP_COLUMN]
        frames.append(df)
    if not frames:
        raise UsageError("give at least one --data file")
    return pd.concat(frames, ignore_index=True)


def train_act_model(data: list[Path], out: Path, *, random_state: int = 0, folds: int = 5) -> TrainResult:
    paths = [Path(p) for p in data]
    labelled = read_act_labels(paths)
    model, metrics = train_acts(labelled, random_state=random_state, folds=folds)
    card = new_card(
        kind="acts", name=Path(out).name, feature_set=ACT_FEATURE_SET,
        training_data=[p.name for p in paths], data_sha256=_hash_files(paths), n_train=len(labelled),
        classes=list(schema.ACT_LABELS), random_state=random_state,
        metrics={"cv": f"{folds}-fold {'GroupKFold by template' if GROUP_COLUMN in labelled.columns else 'KFold'}"
                 " (seeded), threshold 0.5",
                 "per_class": metrics.to_dict("records")},
        notes="Calibrated (sigmoid) one-vs-rest logistic regression over jieba word 1-2-grams and char 1-3-grams.",
    )
    save_model(model, card, Path(out))
    return TrainResult(Path(out), card, metrics)


def read_risk_labels(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={schema.CONVERSATION_ID: str}, encoding="utf-8-sig")
    for col in (schema.CONVERSATION_ID, TARGET):
        if col not in df.columns:
            raise InputError(f"missing column '{col}' (need conversation_id, target)", file=str(path), line=1)
    df[TARGET] = pd.to_numeric(df[TARGET], errors="coerce")
    return df[[schema.CONVERSATION_ID, TARGET]]


def stc3_targets(paths: list[Path], target: StcTarget = "S") -> pd.DataFrame:
    """Risk targets from STC-3 annotations: -mean S (or -mean of S, A, E): higher = more dissatisfied."""
    from qa_inspect.ingest.research import stc3_labels

    lab = pd.concat([stc3_labels(p) for p in paths], ignore_index=True)
    t = -lab["S"] if target == "S" else -(lab["S"] + lab["A"] + lab["E"]) / 3.0
    return pd.DataFrame({schema.CONVERSATION_ID: lab[schema.CONVERSATION_ID].astype(str), TARGET: t})


def train_risk_model(data: list[Path], out: Path, *, rules_dir: Path | None = None,
                     labels: Path | None = None, acts_model: Path | None = None, use_acts: bool = True,
                     stc3_target: str = "S", random_state: int = 0, folds: int = 5) -> TrainResult:
    """Ingest ``data``, take targets from ``labels`` (or the STC-3 files themselves), fit, write."""
    from qa_inspect.config import resolve_rules_dir
    from qa_inspect.ingest.core import ingest_paths
    from qa_inspect.models import load_models, predict_acts

    if stc3_target not in ("S", "SAE"):
        raise UsageError(f"--stc3-target must be S or SAE, got '{stc3_target}'")
    if not data:
        raise UsageError("give at least one --data file")
    paths = [Path(p) for p in data]
    messages = ingest_paths(paths, rules_dir=resolve_rules_dir(rules_dir)).messages
    if labels is not None:
        targets = read_risk_labels(Path(labels))
        hashed = [*paths, Path(labels)]
    else:
        if not all(p.suffix.lower() == ".json" for p in paths):
            raise UsageError("--labels labels.csv (conversation_id,target) is required unless --data is STC-3 json")
        targets = stc3_targets(paths, "S" if stc3_target == "S" else "SAE")
        hashed = paths
    known = set(messages[schema.CONVERSATION_ID].astype(str))
    if not known & set(targets[schema.CONVERSATION_ID].astype(str)):
        ex = ", ".join(sorted(known)[:3])
        raise InputError(f"no label matches an imported conversation_id (ids look like: {ex})",
                         file=str(labels) if labels else None, field=schema.CONVERSATION_ID)
    messages = ensure_text_columns(messages)
    acts = None
    acts_card_name = "none"
    if use_acts:
        models = load_models(acts_model)
        acts = predict_acts(messages, models)
        acts_card_name = models.acts_card.name + "@" + models.acts_card.training_data_sha256[:12]
    model, metrics = train_risk(messages, targets, acts=acts, random_state=random_state, folds=folds)
    card = new_card(
        kind="risk", name=Path(out).name, feature_set=RISK_FEATURE_SET,
        training_data=[p.name for p in hashed], data_sha256=_hash_files(hashed),
        n_train=int(metrics["n_conversations"]), classes=["dissatisfaction_risk"], random_state=random_state,
        metrics={**metrics, "target": ("labels.csv target" if labels is not None
                                       else f"STC-3 -mean({stc3_target})"),
                 "target_range": [model.target_lo, model.target_hi], "act_model": acts_card_name},
        notes="risk = (target - lo) / (hi - lo) predicted by stacked ridge(text) + gradient boosting.",
    )
    save_model(model, card, Path(out))
    table = pd.DataFrame({"metric": list(metrics), "value": [f"{metrics[k]:g}" for k in metrics]})
    return TrainResult(Path(out), card, table)
