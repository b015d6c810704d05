"""Trained classifiers: agent dialogue acts and conversation dissatisfaction risk.

Entry points (see docs/architecture.md): ``load_models``, ``predict_acts``, ``act_findings``
(alias ``model_findings``), ``predict_risk`` and ``combine.combine``. Models are passed in,
never cached at module level, so partitions can run in any process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qa_inspect import schema
from qa_inspect.errors import UserError
from qa_inspect.modeldirs import default_acts_dir, resolve_model_dirs
from qa_inspect.models.acts import (
    ActFeatures,
    ActModel,
    act_findings_frame,
    predict_act_features,
    predict_act_frame,
)
from qa_inspect.models.card import ModelCard, load_model
from qa_inspect.models.features import ACT_FEATURE_SET, RISK_FEATURE_SET, ensure_text_columns
from qa_inspect.models.risk import RiskModel
from qa_inspect.models.thresholds import ModelsConfig, load_thresholds

__all__ = [
    "Models", "load_models", "default_acts_dir", "predict_acts", "predict_acts_with_features", "ActFeatures",
    "act_findings", "model_findings",
    "predict_risk", "load_thresholds", "ModelsConfig",
]


@dataclass
class Models:
    acts: ActModel
    acts_card: ModelCard
    risk: RiskModel | None = None
    risk_card: ModelCard | None = None


def _load_acts(d: Path) -> tuple[ActModel, ModelCard]:
    model, card = load_model(d, kind="acts", feature_set=ACT_FEATURE_SET)
    if not isinstance(model, ActModel):
        raise UserError(f"{d}: model.joblib is not an act model")
    return model, card


def _load_risk(d: Path) -> tuple[RiskModel, ModelCard]:
    model, card = load_model(d, kind="risk", feature_set=RISK_FEATURE_SET)
    if not isinstance(model, RiskModel):
        raise UserError(f"{d}: model.joblib is not a risk model")
    return model, card


def load_models(models_dir: Path | None) -> Models:
    """Load models from a folder the user chose (pickles run code: never load untrusted folders).

    ``None`` -> the shipped act model, no risk model. A folder either holds one model
    (``card.json`` + ``model.joblib``, kind from the card) or ``acts/`` and/or ``risk/``
    sub-folders; without an act model there the shipped one is used.
    """
    acts_dir, risk_dir = resolve_model_dirs(models_dir)
    acts, acts_card = _load_acts(acts_dir)
    risk, risk_card = _load_risk(risk_dir) if risk_dir is not None else (None, None)
    return Models(acts, acts_card, risk, risk_card)


def predict_acts(partition: pd.DataFrame, models: Models) -> pd.DataFrame:
    """Act probabilities per agent message.

    Input: messages (conversation_id, seq, role, text; norm_text/tokens used when present).
    Output: conversation_id, seq, act_<label> for each label in schema.ACT_LABELS (0..1,
    calibrated, independent per label), one row per agent message.
    """
    schema.require_columns(partition, [schema.CONVERSATION_ID, schema.SEQ, schema.ROLE, schema.TEXT],
                           "predict_acts")
    return predict_act_frame(partition, models.acts)


def predict_acts_with_features(partition: pd.DataFrame, models: Models) -> tuple[pd.DataFrame, ActFeatures]:
    """``predict_acts`` plus the act features it computed: pass them to ``act_findings`` of the
    same partition so the finding messages are not vectorised a second time."""
    schema.require_columns(partition, [schema.CONVERSATION_ID, schema.SEQ, schema.ROLE, schema.TEXT],
                           "predict_acts")
    return predict_act_features(partition, models.acts)


def act_findings(partition: pd.DataFrame, acts: pd.DataFrame, models: Models,
                 thresholds: ModelsConfig, features: ActFeatures | None = None) -> pd.DataFrame:
    """Findings (schema.FINDING_COLUMNS, source=model) for acts above their models.yaml threshold.

    Evidence: the n-gram contributing most to the act (coefficient x feature value) located in
    the original text; the explanation lists the top three and the probability. ``features``:
    from ``predict_acts_with_features`` on this partition (same result, less work); ignored
    when they were made from another partition or model.
    """
    schema.require_columns(partition, [schema.CONVERSATION_ID, schema.SEQ, schema.ROLE, schema.TEXT],
                           "act_findings")
    return act_findings_frame(partition, acts, models.acts, thresholds, features)


model_findings = act_findings


def predict_risk(partition: pd.DataFrame, acts: pd.DataFrame | None, findings: pd.DataFrame | None,
                 models: Models) -> pd.DataFrame:
    """conversation_id, dissatisfaction_risk (0..1) per conversation; NaN when no risk model."""
    schema.require_columns(partition, [schema.CONVERSATION_ID, schema.SEQ, schema.ROLE, schema.TEXT],
                           "predict_risk")
    if models.risk is None:
        ids = pd.unique(partition[schema.CONVERSATION_ID].astype(str))
        return pd.DataFrame({schema.CONVERSATION_ID: pd.Series(ids, dtype="string"),
                             schema.RISK: pd.Series([float("nan")] * len(ids), dtype="float64")})
    msgs = ensure_text_columns(partition)
    return models.risk.predict_frame(msgs, acts, findings)
