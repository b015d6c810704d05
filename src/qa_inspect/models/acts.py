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


def _unique_inputs(agents: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct (norm_text, tokens) inputs and, per row, the index of its distinct input.

    Chat logs repeat themselves (templates, 好的, 亲在的): vectorising and predicting each
    distinct input once and fanning the result out gives the same numbers, since every
    feature and probability is computed row by row.
    """
    inputs = act_inputs(agents)
    codes, uniq_norm = pd.factorize(inputs[schema.NORM_TEXT].to_numpy(dtype=object))
    codes = codes.astype(np.intp)
    # Same norm_text almost always means same tokens; check the tokens only where texts repeat.
    dup = np.flatnonzero(pd.Series(codes).duplicated(keep=False).to_numpy())
    if len(dup):
        tokens = inputs[schema.TOKENS].to_numpy(dtype=object)
        owner: dict[int, tuple[str, ...]] = {}
        extra: dict[tuple[int, tuple[str, ...]], int] = {}
        for i in dup.tolist():
            c, t = int(codes[i]), tuple(tokens[i])
            if owner.setdefault(c, t) != t:
                codes[i] = extra.setdefault((c, t), len(uniq_norm) + len(extra))
    _, first, codes = np.unique(codes, return_index=True, return_inverse=True)
    return inputs.iloc[first].reset_index(drop=True), codes


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
    uniq, codes = _unique_inputs(agents)
    p_u, _ = model.proba(uniq)
    out = pd.DataFrame(p_u[codes], columns=cols)
    out.insert(0, schema.SEQ, agents[schema.SEQ].astype("int64").to_numpy())
    out.insert(0, schema.CONVERSATION_ID, agents[schema.CONVERSATION_ID].astype("string").to_numpy())
    return out


def _clean(name: str) -> str:
    return name.split("__", 1)[1].replace(" ", "") if "__" in name else name


def top_features(model: ActModel, row: sparse.csr_matrix, label: str, k: int = 3) -> list[str]:
    """The n-grams contributing most (coefficient x tf-idf value) to ``label`` for one message."""
    return _top_words(model, row.indices, row.data, model.labels.index(label), k)


def _top_words(model: ActModel, idx: np.ndarray, data: np.ndarray, label_pos: int, k: int = 3) -> list[str]:
    coef = model.coefs[label_pos]
    vals = data * coef[idx]
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
    """Model findings for acts above their configured threshold (source=model, rule MODEL:<act>).

    Thresholds are applied column-wise; only messages that become findings are vectorised
    again (each distinct input once) for their top contributing n-grams.
    """
    if acts.empty or not config.acts:
        return schema.empty_findings()
    agents = ensure_text_columns(agent_rows(partition))
    pos_of = {k: j for j, k in enumerate(zip(agents[schema.CONVERSATION_ID], agents[schema.SEQ], strict=True))}
    a_cid = acts[schema.CONVERSATION_ID].to_numpy(dtype=object)
    a_seq = acts[schema.SEQ].to_numpy()
    pos = np.fromiter((pos_of.get(k, -1) for k in zip(a_cid, a_seq, strict=True)), dtype=np.intp,
                      count=len(acts))
    n_chars_agent = np.fromiter((len(str(t).strip()) for t in agents[schema.NORM_TEXT]), dtype=np.int64,
                                count=len(agents))
    n_chars = np.where(pos >= 0, n_chars_agent[np.maximum(pos, 0)] if len(agents) else 0, 0)
    hit_rows: list[np.ndarray] = []
    hit_labels: list[np.ndarray] = []
    labels = list(config.acts)
    for li, (label, pol) in enumerate(config.acts.items()):
        p = acts[schema.act_column(label)].to_numpy(dtype=float)
        rows = np.flatnonzero((p >= pol.threshold) & (n_chars >= pol.min_chars) & (pos >= 0))
        hit_rows.append(rows)
        hit_labels.append(np.full(len(rows), li, dtype=np.intp))
    rows_all = np.concatenate(hit_rows)
    if not len(rows_all):
        return schema.empty_findings()
    lab_all = np.concatenate(hit_labels)
    order = np.lexsort((lab_all, rows_all))  # message order, then config order (as before)
    rows_all, lab_all = rows_all[order], lab_all[order]

    msg_pos = pos[rows_all]
    needed = np.unique(msg_pos)
    uniq, codes = _unique_inputs(agents.iloc[needed])
    x = sparse.csr_matrix(model.vectorizer.transform(uniq))
    code_of = dict(zip(needed.tolist(), codes.tolist(), strict=True))
    text = agents[schema.TEXT].to_numpy(dtype=object)
    norm = agents[schema.NORM_TEXT].to_numpy(dtype=object)
    shop = agents[schema.SHOP_ID].to_numpy(dtype=object) if schema.SHOP_ID in agents.columns else None
    agent = agents[schema.AGENT_ID].to_numpy(dtype=object) if schema.AGENT_ID in agents.columns else None
    probs = {li: acts[schema.act_column(lab)].to_numpy(dtype=float) for li, lab in enumerate(labels)}
    words_cache: dict[tuple[int, int], list[str]] = {}
    records = []
    for i, li, mp in zip(rows_all.tolist(), lab_all.tolist(), msg_pos.tolist(), strict=True):
        label = labels[li]
        pol = config.acts[label]
        p = float(probs[li][i])
        u = code_of[mp]
        words = words_cache.get((u, li))
        if words is None:
            a, b = x.indptr[u], x.indptr[u + 1]
            words = _top_words(model, x.indices[a:b], x.data[a:b], model.labels.index(label))
            words_cache[(u, li)] = words
        ev, s, e = _span(str(text[mp]), str(norm[mp]), words)
        records.append({
            schema.CONVERSATION_ID: a_cid[i],
            schema.SHOP_ID: shop[mp] if shop is not None else pd.NA,
            schema.AGENT_ID: agent[mp] if agent is not None else pd.NA,
            schema.MESSAGE_INDEX: int(a_seq[i]),
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
