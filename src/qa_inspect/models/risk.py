"""Conversation dissatisfaction risk (0..1): how unhappy the customer ends up.

Two stages. Stage 1: ridge regressions over character n-grams of the whole dialogue, the
customer side, the agent side and the customer's last turn; their out-of-fold predictions
become features. Stage 2: gradient-boosted trees over those predictions plus turn structure
(turns, who spoke last, repeated questions, cue words in the last customer turn), act
probabilities and, when given, rule-finding counts. Out-of-fold stacking keeps stage 2 from
trusting stage-1 scores that memorised the training dialogues.

Targets: any ``conversation_id, target`` table, higher = more dissatisfied; they are min-max
scaled to 0..1 at training time (the card records the range), so ``risk`` is on that scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline
from threadpoolctl import threadpool_limits

from qa_inspect import schema
from qa_inspect.errors import InputError, UserError
from qa_inspect.models.features import (
    STRUCT_FEATURES,
    act_aggregates,
    conversation_structure,
    conversation_texts,
    ensure_text_columns,
    finding_counts,
    tfidf_transform,
)

TEXT_FIELDS = ("all", "customer", "agent", "last_customer")
TARGET = "target"


def text_ridge(alpha: float = 3.0) -> Pipeline:
    return make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, max_features=60000,
                        sublinear_tf=True),
        Ridge(alpha=alpha),
    )


def _strip(pipe: Pipeline) -> Pipeline:
    vec = pipe.steps[0][1]
    if hasattr(vec, "stop_words_"):
        vec.stop_words_ = None  # introspection only; keeps the pickle small
    return pipe


@dataclass
class RiskModel:
    text_models: dict[str, Pipeline]
    stage2: HistGradientBoostingRegressor
    feature_names: list[str]
    uses_acts: bool
    uses_findings: bool
    target_lo: float
    target_hi: float
    extras: dict[str, float] = field(default_factory=dict)

    def predict_frame(self, messages: pd.DataFrame, acts: pd.DataFrame | None,
                      findings: pd.DataFrame | None) -> pd.DataFrame:
        if self.uses_findings and findings is None:
            raise UserError("this risk model was trained with rule findings; pass the findings frame")
        if self.uses_acts and acts is None:
            raise UserError("this risk model was trained with act features; pass the acts frame "
                            "(models.predict_acts)")
        texts = conversation_texts(messages)
        base = structural_block(messages, acts if self.uses_acts else None,
                                findings if self.uses_findings else None, texts.index,
                                self.uses_acts, self.uses_findings)
        for f, model in self.text_models.items():
            base[f"ridge_{f}"] = _ridge_predict(model, texts[f].tolist()) if len(texts) else []
        pred = self.stage2.predict(base[self.feature_names].to_numpy(dtype=float)) if len(base) else []
        risk = np.clip(np.asarray(pred, dtype=float), 0.0, 1.0)
        return pd.DataFrame({schema.CONVERSATION_ID: texts.index.astype("string"), schema.RISK: risk})


def _ridge_predict(pipe: Pipeline, docs: list[str]) -> np.ndarray:
    """``pipe.predict(docs)`` for a text_ridge pipeline, its tf-idf step counted in bulk
    (features.tfidf_transform: the same matrix, so the same predictions); other pipelines as is."""
    if len(pipe.steps) != 2 or not isinstance(pipe.steps[0][1], TfidfVectorizer):
        return np.asarray(pipe.predict(docs))
    return np.asarray(pipe.steps[1][1].predict(tfidf_transform(pipe.steps[0][1], docs)))


def structural_block(messages: pd.DataFrame, acts: pd.DataFrame | None, findings: pd.DataFrame | None,
                     index: pd.Index, uses_acts: bool, uses_findings: bool) -> pd.DataFrame:
    parts = [conversation_structure(messages).reindex(index)[list(STRUCT_FEATURES)]]
    if uses_acts:
        parts.append(act_aggregates(acts, index))
    if uses_findings:
        parts.append(finding_counts(findings, index))
    return pd.concat(parts, axis=1).astype(float)


def _stage2(random_state: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=250, learning_rate=0.04, max_leaf_nodes=15,
                                         min_samples_leaf=25, l2_regularization=1.0,
                                         random_state=random_state)


def train_risk(messages: pd.DataFrame, labels: pd.DataFrame, *, acts: pd.DataFrame | None = None,
               findings: pd.DataFrame | None = None, random_state: int = 0,
               folds: int = 5) -> tuple[RiskModel, dict[str, float]]:
    """Fit on conversations that have a label; metrics are out-of-fold (seeded KFold by dialogue)."""
    with threadpool_limits(limits=1):  # many small fits: thread hand-offs cost more than they save
        return _train_risk(messages, labels, acts=acts, findings=findings, random_state=random_state,
                           folds=folds)


def _train_risk(messages: pd.DataFrame, labels: pd.DataFrame, *, acts: pd.DataFrame | None,
                findings: pd.DataFrame | None, random_state: int,
                folds: int) -> tuple[RiskModel, dict[str, float]]:
    schema.require_columns(labels, [schema.CONVERSATION_ID, TARGET], "train risk")
    messages = ensure_text_columns(messages)
    lab = labels.dropna(subset=[TARGET]).drop_duplicates(schema.CONVERSATION_ID)
    lab = lab.assign(**{schema.CONVERSATION_ID: lab[schema.CONVERSATION_ID].astype(str)})
    msgs = messages[messages[schema.CONVERSATION_ID].astype(str).isin(set(lab[schema.CONVERSATION_ID]))]
    texts = conversation_texts(msgs)
    texts.index = texts.index.astype(str)
    if len(texts) < folds * 4:
        raise InputError(f"need at least {folds * 4} labelled conversations with messages, got {len(texts)}")
    y_raw = lab.set_index(schema.CONVERSATION_ID)[TARGET].astype(float).reindex(texts.index).to_numpy()
    lo, hi = float(np.min(y_raw)), float(np.max(y_raw))
    if hi <= lo:
        raise InputError("all targets are equal; nothing to learn")
    y = (y_raw - lo) / (hi - lo)
    uses_acts = acts is not None
    uses_findings = findings is not None
    base = structural_block(msgs, acts, findings, texts.index, uses_acts, uses_findings)
    base.index = texts.index
    kf = KFold(folds, shuffle=True, random_state=random_state)
    splits = list(kf.split(texts))
    oof = {f: np.zeros(len(texts)) for f in TEXT_FIELDS}
    for tr, te in splits:
        for f in TEXT_FIELDS:
            docs = texts[f].tolist()
            m = text_ridge().fit([docs[i] for i in tr], y[tr])
            oof[f][te] = m.predict([docs[i] for i in te])
    for f in TEXT_FIELDS:
        base[f"ridge_{f}"] = oof[f]
    names = list(base.columns)
    x = base[names].to_numpy(dtype=float)
    # stage-2 out-of-fold predictions for the card's metrics (same folds)
    pred = np.zeros(len(texts))
    for tr, te in splits:
        pred[te] = _stage2(random_state).fit(x[tr], y[tr]).predict(x[te])
    rho = float(spearmanr(pred, y).statistic)
    rho_ridge = float(spearmanr(oof["all"], y).statistic)
    metrics = {"spearman_oof": round(rho, 4), "spearman_ridge_all_oof": round(rho_ridge, 4),
               "mae_oof": round(float(mean_absolute_error(y, np.clip(pred, 0, 1))), 4),
               "n_conversations": int(len(texts)), "folds": folds}
    text_models = {f: _strip(text_ridge().fit(texts[f].tolist(), y)) for f in TEXT_FIELDS}
    stage2 = _stage2(random_state).fit(x, y)
    model = RiskModel(text_models, stage2, names, uses_acts, uses_findings, lo, hi)
    return model, metrics
