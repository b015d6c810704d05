"""Agent dialogue-act classifier: calibrated multi-label probabilities per agent message.

Keyword rules miss paraphrased rudeness (你是不是没看详情页) and selling in the agent's own words;
a linear model over word and character n-grams catches those while staying explainable: the
evidence of a hit is the n-grams whose coefficient x feature value pushed the probability up.
"""

from __future__ import annotations

import operator
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
from qa_inspect.models.features import act_inputs, act_matrix, act_vectorizer, ensure_text_columns, key_rows
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
        x = act_matrix(self.vectorizer, inputs)  # == vectorizer.transform(inputs), counted in bulk
        p = ovr_predict_proba(self.classifier, x)  # == classifier.predict_proba(x)
        return np.asarray(p, dtype=float), x


def _sigmoid_parts(est: object, n_features: int) -> tuple[np.ndarray, float, object] | None:
    """(coef row, intercept, sigmoid calibrator) of a CalibratedClassifierCV(ensemble=False) over
    a binary LogisticRegression, as ``_classifier`` builds it; None for any other estimator."""
    from sklearn.calibration import _SigmoidCalibration

    ccs = getattr(est, "calibrated_classifiers_", None)
    if type(est) is not CalibratedClassifierCV or not ccs or len(ccs) != 1:
        return None
    cc = ccs[0]
    lr = getattr(cc, "estimator", None)
    cals = getattr(cc, "calibrators", None)
    if (getattr(cc, "method", None) != "sigmoid" or type(lr) is not LogisticRegression or not cals
            or len(cals) != 1 or type(cals[0]) is not _SigmoidCalibration):
        return None
    classes, lr_classes = np.asarray(cc.classes), np.asarray(lr.classes_)
    coef, icpt = np.asarray(lr.coef_), np.asarray(lr.intercept_)
    if (len(classes) != 2 or len(lr_classes) != 2 or not np.array_equal(classes, lr_classes)
            or coef.shape != (1, n_features) or icpt.shape != (1,) or coef.dtype != np.float64
            or icpt.dtype != np.float64):
        return None
    return coef[0], icpt, cals[0]


def ovr_predict_proba(clf: OneVsRestClassifier, x: sparse.csr_matrix) -> np.ndarray:
    """``clf.predict_proba(x)`` for the act model's multi-label one-vs-rest of calibrated
    logistic regressions, with the eight decision functions as ONE sparse product.

    scikit-learn computes each label's ``x @ coef.T + intercept`` separately (validation and
    dispatch eight times over for a few hundred rows). A CSR times a dense matrix adds each
    row's products in the same order per column as the one-column product does, so every
    score is the same float; the sigmoid calibrator, the [:, 1] column, the 1.0 clip and the
    mean over one calibrated classifier are then sklearn's own steps. Any other estimator
    (a constant label, another calibration) takes its own ``predict_proba``.
    """
    ests = getattr(clf, "estimators_", None)
    if (type(clf) is not OneVsRestClassifier or not ests or len(ests) < 2 or not getattr(clf, "multilabel_", False)
            or not sparse.issparse(x) or x.format != "csr" or x.dtype != np.float64 or not x.shape[0]):
        return clf.predict_proba(x)
    n, n_features = x.shape
    parts = [_sigmoid_parts(e, n_features) for e in ests]
    fast = [k for k, pt in enumerate(parts) if pt is not None]
    cols: list[np.ndarray] = [np.zeros(0)] * len(ests)
    if fast:
        w = np.ascontiguousarray(np.column_stack([parts[k][0] for k in fast]))  # type: ignore[index]
        scores = x @ w
        for j, k in enumerate(fast):
            _, icpt, cal = parts[k]  # type: ignore[misc]
            pos = cal.predict(scores[:, j] + icpt)
            proba = np.zeros((n, 2))
            proba[:, 1] = pos
            proba[:, 0] = 1.0 - proba[:, 1]
            proba[(1.0 < proba) & (proba <= 1.0 + 1e-5)] = 1.0
            mean = np.zeros((n, 2))
            mean += proba
            mean /= 1
            cols[k] = mean[:, 1]
    for k, pt in enumerate(parts):
        if pt is None:
            cols[k] = ests[k].predict_proba(x)[:, 1]
    return np.array(cols).T


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


def agent_rows(partition: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The agent messages; only ``columns`` of them (when all are present) so the other columns,
    token lists included, are not copied."""
    mask = (partition[schema.ROLE].astype(str) == "agent").to_numpy(dtype=bool)
    if columns is not None and all(c in partition.columns for c in columns):
        return partition.loc[mask, columns]
    return partition[mask]


_ACT_COLUMNS = [schema.CONVERSATION_ID, schema.SEQ, schema.NORM_TEXT, schema.TOKENS]
_FINDING_DTYPES = schema.empty_findings().dtypes.to_dict()  # constant: the findings contract


def _unique_inputs(agents: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct (norm_text, tokens) inputs and, per row, the index of its distinct input.

    Chat logs repeat themselves (templates, 好的, 亲在的): vectorising and predicting each
    distinct input once and fanning the result out gives the same numbers, since every
    feature and probability is computed row by row. Only the distinct rows are turned into
    model inputs (``act_inputs``).
    """
    norm = agents[schema.NORM_TEXT].astype(str)
    codes, uniq_norm = pd.factorize(norm)
    codes = codes.astype(np.intp)
    tokens = agents[schema.TOKENS].to_numpy(dtype=object)
    # Same norm_text almost always means same tokens; check the tokens only where texts repeat:
    # a repeat whose tokens differ from the text's first row becomes an input of its own.
    dup = np.flatnonzero(pd.Series(codes).duplicated(keep=False).to_numpy())
    if len(dup):
        _, owner_pos = np.unique(codes[dup], return_index=True)
        owner_of = dict(zip(codes[dup][owner_pos].tolist(), dup[owner_pos].tolist(), strict=True))
        own = [owner_of[c] for c in codes[dup].tolist()]
        mine, theirs = tokens[dup].tolist(), tokens[own].tolist()
        if all(type(t) is list for t in mine):  # list == list in C, one call per pair
            same = np.fromiter(map(operator.eq, mine, theirs), dtype=bool, count=len(dup))
            differs = dup[~same].tolist()
        else:
            differs = [i for i, a, b in zip(dup.tolist(), mine, theirs, strict=True)
                       if not (a is b or (type(a) is list and type(b) is list and a == b) or _same_tokens(a, b))]
        extra: dict[tuple[int, tuple[str, ...]], int] = {}
        for i in differs:
            codes[i] = extra.setdefault((int(codes[i]), tuple(tokens[i])), len(uniq_norm) + len(extra))
    _, first, codes = np.unique(codes, return_index=True, return_inverse=True)
    # Token lists filled into an object array one by one: a list of lists handed to the frame
    # is first tried as a 2-D array; and only the distinct texts leave Arrow.
    tok = np.empty(len(first), dtype=object)
    for j, t in enumerate(tokens[first].tolist()):
        tok[j] = list(t)
    inputs = pd.DataFrame({schema.TOKENS: tok, schema.NORM_TEXT: norm.iloc[first].to_numpy()})
    return inputs, codes.reshape(-1)


def _same_tokens(a: object, b: object) -> bool:
    if a is b:
        return True
    if type(a) is list and type(b) is list:
        return a == b
    return tuple(a) == tuple(b)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ActFeatures:
    """The act model's features of one partition's agent messages, made by ``predict_act_features``.

    ``act_findings_frame`` needs the features of the messages that became findings (for their
    top n-grams); handing these over saves vectorising those texts a second time. They belong
    to that partition object and model (checked by identity, so a copy or another partition of
    the same size is vectorised afresh); the partition must not be changed in between.
    """

    partition: pd.DataFrame = field(repr=False)
    model: ActModel = field(repr=False)
    n_agents: int  # agent messages of the partition (agent_rows order)
    codes: np.ndarray = field(repr=False)  # per agent message: its row of ``x``
    x: sparse.csr_matrix = field(repr=False)  # features of each distinct (norm_text, tokens) input

    def usable_for(self, partition: pd.DataFrame, model: ActModel, n_agents: int) -> bool:
        return self.partition is partition and self.model is model and self.n_agents == n_agents


def predict_act_frame(partition: pd.DataFrame, model: ActModel) -> pd.DataFrame:
    """conversation_id, seq, act_<label>... for every agent message of ``partition``."""
    return predict_act_features(partition, model)[0]


def predict_act_features(partition: pd.DataFrame, model: ActModel) -> tuple[pd.DataFrame, ActFeatures]:
    """``predict_act_frame`` plus the features it computed, for ``act_findings_frame``."""
    cols = [schema.act_column(a) for a in model.labels]
    agents = agent_rows(partition, _ACT_COLUMNS)
    if agents.empty:
        out = pd.DataFrame({schema.CONVERSATION_ID: pd.Series(dtype="string"),
                            schema.SEQ: pd.Series(dtype="int64")})
        for c in cols:
            out[c] = pd.Series(dtype="float64")
        return out, ActFeatures(partition, model, 0, np.zeros(0, dtype=np.intp), sparse.csr_matrix((0, 0)))
    agents = ensure_text_columns(agents)
    uniq, codes = _unique_inputs(agents)
    p_u, x = model.proba(uniq)
    out = pd.DataFrame(p_u[codes], columns=cols)
    out.insert(0, schema.SEQ, agents[schema.SEQ].astype("int64").to_numpy())
    out.insert(0, schema.CONVERSATION_ID, agents[schema.CONVERSATION_ID].astype("string").to_numpy())
    return out, ActFeatures(partition, model, len(agents), codes, x)


def _take(s: pd.Series, rows: np.ndarray) -> object:
    """``s`` at ``rows``: Arrow take for string columns (no Python object per value)."""
    if s.dtype == pd.StringDtype():
        return s.array.take(rows)
    return s.to_numpy(dtype=object)[rows]


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


def _top_words_many(model: ActModel, x: sparse.csr_matrix, rows: np.ndarray, label_pos: np.ndarray,
                    k: int = 3) -> list[list[str]]:
    """``_top_words`` for many (row of ``x``, label) pairs.

    The contributions of all pairs are computed in one array pass; per pair only its positive
    ones (the walk stops at the first non-positive) are ordered, with Python's stable
    ``sorted(reverse=True)``, which orders ties as the stable argsort of ``-vals`` does.
    """
    if not len(rows):
        return []
    starts = x.indptr[rows].astype(np.int64)
    lens = x.indptr[rows + 1].astype(np.int64) - starts
    seg_start = np.cumsum(lens) - lens
    pos = np.repeat(starts - seg_start, lens) + np.arange(int(lens.sum()), dtype=np.int64)
    idx = x.indices[pos]
    vals = x.data[pos] * model.coefs[np.repeat(label_pos, lens), idx]  # float64 x float32, as per row
    if np.isnan(vals).any():  # NaN sorts last in the argsort: keep the per-row definition
        return [_top_words(model, x.indices[x.indptr[r]:x.indptr[r + 1]], x.data[x.indptr[r]:x.indptr[r + 1]],
                           int(lp), k) for r, lp in zip(rows.tolist(), label_pos.tolist(), strict=True)]
    positive = vals > 0
    n_pos = np.bincount(np.repeat(np.arange(len(rows)), lens)[positive], minlength=len(rows))
    v_all, i_all = vals[positive].tolist(), idx[positive].tolist()
    names = model.feature_names
    out_all: list[list[str]] = []
    a = 0
    for n in n_pos.tolist():
        seg = v_all[a:a + n]
        out: list[str] = []
        for j in sorted(range(n), key=seg.__getitem__, reverse=True):
            if len(out) >= k:
                break
            s = _clean(str(names[i_all[a + j]])).strip()
            if s and not any(s in o for o in out):
                out = [o for o in out if o not in s] + [s]
        out_all.append(out)
        a += n
    return out_all


def _span(text: str, norm: str, words: list[str]) -> tuple[str, int, int]:
    """Locate the best evidence word in the original text (via norm_text when lengths match)."""
    for w in sorted(words, key=len, reverse=True):
        hay = norm if len(norm) == len(text) else text
        i = hay.find(w)
        if i >= 0:
            return text[i:i + len(w)], i, i + len(w)
    return (words[0] if words else ""), -1, -1


def _span_sorted(text: str, norm: str, by_len: list[str], first: str) -> tuple[str, int, int]:
    """``_span`` with the words already sorted longest first and ``first`` = words[0] (or "")."""
    hay = norm if len(norm) == len(text) else text
    for w in by_len:
        i = hay.find(w)
        if i >= 0:
            return text[i:i + len(w)], i, i + len(w)
    return first, -1, -1


def act_findings_frame(partition: pd.DataFrame, acts: pd.DataFrame, model: ActModel,
                       config: ModelsConfig, features: ActFeatures | None = None) -> pd.DataFrame:
    """Model findings for acts above their configured threshold (source=model, rule MODEL:<act>).

    Thresholds are applied column-wise. The top contributing n-grams of the messages that
    became findings come from ``features`` (``predict_act_features`` on this partition and
    model); without them only those messages are vectorised (each distinct input once).
    """
    if acts.empty or not config.acts:
        return schema.empty_findings()
    # ``src`` rows ``apos`` are the agent messages: the partition itself when it has the text
    # columns (each column is then read at the rows it is needed for, not copied for every agent
    # message first), else the agent rows with norm_text/tokens made here.
    want = [*_ACT_COLUMNS, schema.TEXT, schema.SHOP_ID, schema.AGENT_ID]
    if all(c in partition.columns for c in want):
        src = partition
        apos = np.flatnonzero((partition[schema.ROLE].astype(str) == "agent").to_numpy(dtype=bool))
    else:
        src = ensure_text_columns(agent_rows(partition, want))
        apos = np.arange(len(src))
    n_agents = len(apos)
    a_seq = acts[schema.SEQ].to_numpy()
    pos = key_rows(src[schema.CONVERSATION_ID].iloc[apos], src[schema.SEQ].to_numpy()[apos],
                   acts[schema.CONVERSATION_ID], a_seq)
    labels = list(config.acts)
    probs = {li: acts[schema.act_column(lab)].to_numpy(dtype=float) for li, lab in enumerate(labels)}
    # Characters are counted only where some act clears its threshold (the min_chars test).
    cand = np.zeros(len(acts), dtype=bool)
    for li, pol in enumerate(config.acts.values()):
        cand |= probs[li] >= pol.threshold
    cand &= pos >= 0
    n_chars = np.zeros(len(acts), dtype=np.int64)
    cand_rows = np.flatnonzero(cand)
    if len(cand_rows):
        norm_cand = src[schema.NORM_TEXT].iloc[apos[pos[cand_rows]]].to_numpy(dtype=object)
        n_chars[cand_rows] = [len(str(t).strip()) for t in norm_cand.tolist()]
    hit_rows: list[np.ndarray] = []
    hit_labels: list[np.ndarray] = []
    for li, pol in enumerate(config.acts.values()):
        rows = np.flatnonzero((probs[li] >= pol.threshold) & (n_chars >= pol.min_chars) & cand)
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
    if features is not None and features.usable_for(partition, model, n_agents):
        x, codes = features.x, features.codes[needed]
    else:
        uniq, codes = _unique_inputs(src[_ACT_COLUMNS].iloc[apos[needed]])
        x = act_matrix(model.vectorizer, uniq)
    # Per finding, as Python lists (no numpy scalar per value): its distinct input, the text of its
    # message (by position in ``needed``) and its probability.
    at = np.searchsorted(needed, msg_pos)
    u_all = np.asarray(codes)[at].tolist()
    text = src[schema.TEXT].iloc[apos[needed]].to_numpy(dtype=object)
    norm = src[schema.NORM_TEXT].iloc[apos[needed]].to_numpy(dtype=object)
    p_all = np.column_stack([probs[li] for li in range(len(labels))])[rows_all, lab_all].tolist()
    pols = [config.acts[lab] for lab in labels]
    label_pos = [model.labels.index(lab) for lab in labels]
    prefix = [f"{pol.explanation or lab}: p({lab})=" for lab, pol in zip(labels, pols, strict=True)]
    # Per distinct (input, act): the top n-grams (all pairs at once), longest first as _span
    # tries them, and joined for the explanation.
    pair_codes, pairs = pd.factorize(np.asarray(u_all, dtype=np.int64) * len(labels) + lab_all)
    pair_u, pair_li = np.divmod(np.asarray(pairs, dtype=np.int64), len(labels))
    top = _top_words_many(model, x, pair_u, np.asarray(label_pos, dtype=np.intp)[pair_li])
    by_pair = [(sorted(words, key=len, reverse=True), ", ".join(words), words[0] if words else "")
               for words in top]
    # Column lists, not one dict per finding (same values, same frame after findings_frame's dtypes).
    ev_col: list[str] = []
    start_col: list[int] = []
    end_col: list[int] = []
    expl_col: list[str] = []
    for li, c, k, p in zip(lab_all.tolist(), pair_codes.tolist(), at.tolist(), p_all, strict=True):
        by_len, joined, first = by_pair[c]
        ev, s, e = _span_sorted(str(text[k]), str(norm[k]), by_len, first)
        ev_col.append(ev)
        start_col.append(s)
        end_col.append(e)
        expl_col.append(f"{prefix[li]}{p:.2f}; top n-grams: " + joined)
    conf_col = p_all
    n = len(rows_all)

    def per_label(values: list[str]) -> object:
        return pd.array(values, dtype="string").take(lab_all)

    # Columns built in their findings dtype, so the final frame needs no conversion pass.
    cols = {
        schema.CONVERSATION_ID: _take(acts[schema.CONVERSATION_ID], rows_all),
        schema.SHOP_ID: _take(src[schema.SHOP_ID], apos[msg_pos]) if schema.SHOP_ID in src.columns else [pd.NA] * n,
        schema.AGENT_ID: _take(src[schema.AGENT_ID], apos[msg_pos]) if schema.AGENT_ID in src.columns else [pd.NA] * n,
        schema.MESSAGE_INDEX: np.asarray([int(v) for v in a_seq[rows_all].tolist()], dtype=np.int64),
        schema.RULE_ID: per_label([f"MODEL:{lab}" for lab in labels]),
        schema.DIMENSION: per_label([p.dimension for p in pols]),
        schema.POLARITY: per_label([p.polarity for p in pols]),
        schema.SEVERITY: per_label([p.severity for p in pols]),
        schema.POINTS: np.asarray([p.points for p in pols], dtype=np.float64)[lab_all],
        schema.EVIDENCE: pd.array(ev_col, dtype=_FINDING_DTYPES[schema.EVIDENCE]),
        schema.EVIDENCE_START: np.asarray(start_col, dtype=np.int64),
        schema.EVIDENCE_END: np.asarray(end_col, dtype=np.int64),
        schema.EXPLANATION: pd.array(expl_col, dtype=_FINDING_DTYPES[schema.EXPLANATION]),
        schema.SOURCE: pd.array(["model"] * n, dtype="string"),
        schema.CONFIDENCE: np.asarray(conf_col, dtype=np.float64),
    }
    return as_findings_dtypes(pd.DataFrame(cols, columns=list(schema.FINDING_COLUMNS)))


def as_findings_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """``df.astype`` to the findings dtypes; a frame that has them already is returned as is
    (converting 15 columns to the dtypes they have costs milliseconds per partition)."""
    if list(df.columns) == list(_FINDING_DTYPES) and all(df[c].dtype == t for c, t in _FINDING_DTYPES.items()):
        return df
    return df.astype(_FINDING_DTYPES)
