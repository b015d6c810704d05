"""Agent dialogue-act classifier: calibrated multi-label probabilities per agent message.

Keyword rules miss paraphrased rudeness (你是不是没看详情页) and selling in the agent's own words;
a linear model over word and character n-grams catches those while staying explainable: the
evidence of a hit is the n-grams whose coefficient x feature value pushed the probability up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import GroupKFold, KFold
from sklearn.multiclass import OneVsRestClassifier
from threadpoolctl import threadpool_limits

from qa_inspect import schema
from qa_inspect.errors import InputError
from qa_inspect.models.features import act_inputs, act_vectorizer, ensure_text_columns
from qa_inspect.models.thresholds import ModelsConfig
from qa_inspect.text.tokenize import Tokenizer

LABELS_COLUMN = "labels"  # training CSV: text, labels ("a|b"), kind (free note: hard negative...)
GROUP_COLUMN = "group"  # optional: template/source id; CV holds out whole groups


@dataclass
class ActModel:
    """Fitted vectorizer + one calibrated logistic regression per act label."""

    vectorizer: ColumnTransformer
    classifier: OneVsRestClassifier
    labels: tuple[str, ...]
    feature_names: np.ndarray = field(repr=False)
    coefs: np.ndarray = field(repr=False)  # (n_labels, n_features) of the uncalibrated linear models

    def proba(self, inputs: pd.DataFrame) -> tuple[np.ndarray, sparse.csr_matrix]:
        x = self.vectorizer.transform(inputs)
        p = self.classifier.predict_proba(x)
        return np.asarray(p, dtype=float), sparse.csr_matrix(x)


def label_matrix(labels: pd.Series) -> np.ndarray:
    """``a|b`` strings -> indicator matrix over schema.ACT_LABELS; unknown labels are input errors."""
    y = np.zeros((len(labels), len(schema.ACT_LABELS)), dtype=int)
    for i, cell in enumerate(labels.astype(str)):
        for lab in (s.strip() for s in cell.split("|")):
            if not lab:
                continue
            if lab not in schema.ACT_LABELS:
                raise InputError(f"unknown act label '{lab}'; known: {', '.join(schema.ACT_LABELS)}",
                                 line=i + 2, field=LABELS_COLUMN)
            y[i, schema.ACT_LABELS.index(lab)] = 1
    return y


def _classifier(random_state: int) -> OneVsRestClassifier:
    base = LogisticRegression(C=8.0, class_weight="balanced", solver="liblinear", max_iter=1000,
                              random_state=random_state)
    # ensemble=False: one linear model fit on all data (its coefficients give the evidence) and a
    # sigmoid calibrator fit on its cross-validated scores.
    cal = CalibratedClassifierCV(base, method="sigmoid", cv=3, ensemble=False)
    return OneVsRestClassifier(cal)


def _coefs(clf: OneVsRestClassifier, n_features: int) -> np.ndarray:
    rows = []
    for est in clf.estimators_:
        inner = getattr(est, "calibrated_classifiers_", None)
        if inner:
            rows.append(np.asarray(inner[0].estimator.coef_[0], dtype=np.float32))
        else:  # a label that never (or always) occurs: constant predictor, no evidence
            rows.append(np.zeros(n_features, dtype=np.float32))
    return np.vstack(rows)


def _fit(inputs: pd.DataFrame, y: np.ndarray, random_state: int) -> ActModel:
    vec = act_vectorizer()
    x = vec.fit_transform(inputs)
    for _, tr, _ in vec.transformers_:
        if hasattr(tr, "stop_words_"):
            tr.stop_words_ = None  # only needed for introspection; keeps the pickle small
    clf = _classifier(random_state).fit(x, y)
    names = np.asarray(vec.get_feature_names_out(), dtype=object)
    return ActModel(vec, clf, schema.ACT_LABELS, names, _coefs(clf, x.shape[1]))


def prepare_labelled(labelled: pd.DataFrame, tokenizer: Tokenizer | None = None) -> pd.DataFrame:
    """Training CSV rows (``text``, ``labels``) with norm_text/tokens."""
    schema.require_columns(labelled, [schema.TEXT, LABELS_COLUMN], "train acts")
    df = labelled.reset_index(drop=True)
    df = df.assign(**{schema.TEXT: df[schema.TEXT].astype(str)})
    return ensure_text_columns(df, tokenizer)


def cv_metrics(prepared: pd.DataFrame, *, folds: int = 5, random_state: int = 0,
               threshold: float = 0.5) -> pd.DataFrame:
    """Per-label precision/recall/F1 of out-of-fold predictions (seeded).

    With a ``group`` column, folds hold out whole groups (GroupKFold): rows filled from one
    template are near-duplicates, and plain KFold would measure slot memory, not paraphrases.
    """
    y = label_matrix(prepared[LABELS_COLUMN])
    inputs = act_inputs(prepared)
    p = np.zeros(y.shape, dtype=float)
    if GROUP_COLUMN in prepared.columns:
        splits = GroupKFold(folds, shuffle=True, random_state=random_state).split(
            inputs, groups=prepared[GROUP_COLUMN].astype(str))
    else:
        splits = KFold(folds, shuffle=True, random_state=random_state).split(inputs)
    for tr, te in splits:
        model = _fit(inputs.iloc[tr], y[tr], random_state)
        p[te] = model.proba(inputs.iloc[te])[0]
    pred = (p >= threshold).astype(int)
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, zero_division=0)
    return pd.DataFrame({"label": list(schema.ACT_LABELS), "precision": prec.round(3),
                         "recall": rec.round(3), "f1": f1.round(3), "support": support})


def train_acts(labelled: pd.DataFrame, *, random_state: int = 0, folds: int = 5,
               tokenizer: Tokenizer | None = None) -> tuple[ActModel, pd.DataFrame]:
    """Fit the act model on all rows; metrics come from ``folds``-fold cross-validation.

    BLAS/OpenMP are held to one thread: the many tiny fits (8 labels x calibration folds) spend
    more time in thread hand-offs than in arithmetic on a busy machine.
    """
    prepared = prepare_labelled(labelled, tokenizer)
    if len(prepared) < folds * 2:
        raise InputError(f"need at least {folds * 2} labelled messages, got {len(prepared)}")
    y = label_matrix(prepared[LABELS_COLUMN])
    need = 3 * max(folds, 3)  # calibration runs 3-fold inside every CV fold
    for j, label in enumerate(schema.ACT_LABELS):
        pos = int(y[:, j].sum())
        if 0 < pos < need or 0 < len(y) - pos < need:
            raise InputError(f"act '{label}' has {pos} positive and {len(y) - pos} negative examples; "
                             f"need at least {need} of each (or none at all) to train with {folds} folds",
                             field=LABELS_COLUMN)
    with threadpool_limits(limits=1):
        metrics = cv_metrics(prepared, folds=folds, random_state=random_state)
        model = _fit(act_inputs(prepared), label_matrix(prepared[LABELS_COLUMN]), random_state)
    return model, metrics


def agent_rows(partition: pd.DataFrame) -> pd.DataFrame:
    return partition[partition[schema.ROLE].astype(str) == "agent"]


def predict_act_frame(partition: pd.DataFrame, model: ActModel) -> pd.DataFrame:
    """conversation_id, seq, act_<label>... for every agent message of ``partition``."""
    cols = [schema.act_column(a) for a in model.labels]
    agents = agent_rows(partition)
    if agents.empty:
        out = pd.DataFrame({schema.CONVERSATION_ID: pd.Series(dtype="string"),
                            schema.SEQ: pd.Series(dtype="int64")})
        for c in cols:
            out[c] = pd.Series(dtype="float64")
        return out
    agents = ensure_text_columns(agents)
    p, _ = model.proba(act_inputs(agents))
    out = pd.DataFrame(p, columns=cols)
    out.insert(0, schema.SEQ, agents[schema.SEQ].astype("int64").to_numpy())
    out.insert(0, schema.CONVERSATION_ID, agents[schema.CONVERSATION_ID].astype("string").to_numpy())
    return out


def _clean(name: str) -> str:
    return name.split("__", 1)[1].replace(" ", "") if "__" in name else name


def top_features(model: ActModel, row: sparse.csr_matrix, label: str, k: int = 3) -> list[str]:
    """The n-grams contributing most (coefficient x tf-idf value) to ``label`` for one message."""
    coef = model.coefs[model.labels.index(label)]
    idx, vals = row.indices, row.data * coef[row.indices]
    order = np.argsort(-vals, kind="stable")
    out: list[str] = []
    for j in order:
        if vals[j] <= 0 or len(out) >= k:
            break
        s = _clean(str(model.feature_names[idx[j]])).strip()
        if s and not any(s in o for o in out):
            out = [o for o in out if o not in s] + [s]
    return out


def _span(text: str, norm: str, words: list[str]) -> tuple[str, int, int]:
    """Locate the best evidence word in the original text (via norm_text when lengths match)."""
    for w in sorted(words, key=len, reverse=True):
        hay = norm if len(norm) == len(text) else text
        i = hay.find(w)
        if i >= 0:
            return text[i:i + len(w)], i, i + len(w)
    return (words[0] if words else ""), -1, -1


def act_findings_frame(partition: pd.DataFrame, acts: pd.DataFrame, model: ActModel,
                       config: ModelsConfig) -> pd.DataFrame:
    """Model findings for acts above their configured threshold (source=model, rule MODEL:<act>)."""
    if acts.empty or not config.acts:
        return schema.empty_findings()
    agents = ensure_text_columns(agent_rows(partition))
    key = agents.set_index([schema.CONVERSATION_ID, schema.SEQ])
    lengths = {k: len(str(t).strip()) for k, t in key[schema.NORM_TEXT].items()}
    hits: list[tuple[int, str, float]] = []
    for i, rec in enumerate(acts.itertuples(index=False)):
        n_chars = lengths.get((rec[0], rec[1]), 0)
        for label, pol in config.acts.items():
            p = float(getattr(rec, schema.act_column(label)))
            if p >= pol.threshold and n_chars >= pol.min_chars:
                hits.append((i, label, p))
    if not hits:
        return schema.empty_findings()
    rows_needed = sorted({i for i, _, _ in hits})
    sub = acts.iloc[rows_needed]
    msgs = key.loc[list(zip(sub[schema.CONVERSATION_ID], sub[schema.SEQ], strict=True))]
    x = sparse.csr_matrix(model.vectorizer.transform(act_inputs(msgs)))
    pos = {r: j for j, r in enumerate(rows_needed)}
    records = []
    for i, label, p in hits:
        j = pos[i]
        msg = msgs.iloc[j]
        pol = config.acts[label]
        words = top_features(model, x[j], label)
        ev, s, e = _span(str(msg[schema.TEXT]), str(msg[schema.NORM_TEXT]), words)
        records.append({
            schema.CONVERSATION_ID: acts.iloc[i][schema.CONVERSATION_ID],
            schema.SHOP_ID: msg.get(schema.SHOP_ID, pd.NA),
            schema.AGENT_ID: msg.get(schema.AGENT_ID, pd.NA),
            schema.MESSAGE_INDEX: int(acts.iloc[i][schema.SEQ]),
            schema.RULE_ID: f"MODEL:{label}",
            schema.DIMENSION: pol.dimension,
            schema.POLARITY: pol.polarity,
            schema.SEVERITY: pol.severity,
            schema.POINTS: pol.points,
            schema.EVIDENCE: ev,
            schema.EVIDENCE_START: s,
            schema.EVIDENCE_END: e,
            schema.EXPLANATION: f"{pol.explanation or label}: p({label})={p:.2f}; top n-grams: "
                                + ", ".join(words),
            schema.SOURCE: "model",
            schema.CONFIDENCE: p,
        })
    return schema.findings_frame(records)
