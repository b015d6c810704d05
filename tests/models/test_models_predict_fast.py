"""Round-4 fast paths of the act model: one sparse product for the eight calibrated logistic
regressions, vocabulary keys kept on the fitted vectorizer, act findings read from the partition
at the rows they need. Each is compared with scikit-learn's / the plain computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.multiclass import OneVsRestClassifier

from qa_inspect import schema
from qa_inspect.models import Models, ModelsConfig, act_findings, predict_acts_with_features
from qa_inspect.models.acts import ovr_predict_proba
from qa_inspect.models.features import (
    _VOCAB_KEYS_ATTR,
    _char_wb_cells,
    _fitted_vocabulary_keys,
    _vocabulary_keys,
)


def _random_rows(n_features: int, n: int, seed: int) -> sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    x = sparse.random(n, n_features, density=0.004, format="csr", random_state=rng, dtype=np.float64)
    x.data = rng.normal(0.0, 3.0, size=len(x.data))  # large scores: probabilities near 0 and 1
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_ovr_predict_proba_is_sklearns(shipped: Models, seed: int) -> None:
    clf = shipped.acts.classifier
    x = _random_rows(shipped.acts.coefs.shape[1], 300, seed)
    want = clf.predict_proba(x)
    got = ovr_predict_proba(clf, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)  # bit for bit, not approximately
    with pytest.raises(ValueError):  # no rows: sklearn's own answer (an error), not an empty array
        ovr_predict_proba(clf, x[:0])


def test_ovr_predict_proba_falls_back_per_estimator(shipped: Models) -> None:
    """An estimator that is not a calibrated logistic regression answers for itself."""
    clf = shipped.acts.classifier
    x = _random_rows(shipped.acts.coefs.shape[1], 50, 7)

    class Half:
        def predict_proba(self, x: object) -> np.ndarray:
            n = x.shape[0]  # type: ignore[attr-defined]
            return np.column_stack([np.full(n, 0.25), np.full(n, 0.75)])

    mixed = OneVsRestClassifier(clf.estimator)
    mixed.__dict__.update(clf.__dict__)
    mixed.estimators_ = [*clf.estimators_[:-1], Half()]
    got = ovr_predict_proba(mixed, x)
    assert np.array_equal(got[:, :-1], clf.predict_proba(x)[:, :-1])
    assert (got[:, -1] == 0.75).all()


def test_vocabulary_keys_kept_on_the_vectorizer_and_refreshed(shipped: Models) -> None:
    vec = next(tr for _, tr, _ in shipped.acts.vectorizer.transformers_ if getattr(tr, "analyzer", "") == "char_wb")
    keys, cols = _fitted_vocabulary_keys(vec, 3)
    want_keys, want_cols = _vocabulary_keys(vec.vocabulary_, 3)
    assert np.array_equal(keys, want_keys) and np.array_equal(cols, want_cols)
    assert _fitted_vocabulary_keys(vec, 3)[0] is keys  # kept, not rebuilt
    docs = ["亲 在的哦", "质量很好 呢", ""]
    rows, c = _char_wb_cells(vec, docs)
    saved = vec.vocabulary_
    try:  # a new vocabulary (refit) must not reuse the old keys
        vec.vocabulary_ = {t: j for j, t in enumerate(sorted(saved)[:50])}
        keys2, _ = _fitted_vocabulary_keys(vec, 3)
        assert np.array_equal(keys2, _vocabulary_keys(vec.vocabulary_, 3)[0])
    finally:
        vec.vocabulary_ = saved
        vec.__dict__.pop(_VOCAB_KEYS_ATTR, None)
    rows2, c2 = _char_wb_cells(vec, docs)
    assert np.array_equal(rows, rows2) and np.array_equal(c, c2)


def _partition() -> pd.DataFrame:
    texts = ["亲，在的哦，请问有什么可以帮您", "这款是纯棉的，不起球", "你是不是没看详情页", "好的", "亲，在的哦，请问有什么可以帮您",
             "感谢您的耐心等待，已为您登记", "这个没办法", "质量很好哦亲，放心购买"]
    rows = []
    for i, t in enumerate(texts * 3):
        rows.append({schema.CONVERSATION_ID: f"s:c{i // 4}", schema.SEQ: i % 4, schema.SHOP_ID: "s",
                     schema.ROLE: "agent" if i % 3 else "customer", schema.AGENT_ID: "a1", schema.TEXT: t})
    return pd.DataFrame(rows).astype({schema.CONVERSATION_ID: "string", schema.SHOP_ID: "string",
                                      schema.ROLE: "string", schema.AGENT_ID: "string", schema.TEXT: "string"})


def test_act_findings_same_with_and_without_text_columns(shipped: Models, thresholds: ModelsConfig) -> None:
    """Without norm_text/tokens the agent rows are prepared here (the copying path); with them
    the partition is read in place: the same findings either way, with or without features."""
    from qa_inspect.models.features import ensure_text_columns

    raw = _partition()
    prepared = ensure_text_columns(raw)
    acts, feats = predict_acts_with_features(prepared, shipped)
    loose = thresholds.model_copy(deep=True)
    for pol in loose.acts.values():
        pol.threshold = 0.0  # every act of every message becomes a finding
        pol.min_chars = 3
    fast = act_findings(prepared, acts, shipped, loose, feats)
    assert len(fast) > 0
    pd.testing.assert_frame_equal(fast, act_findings(prepared, acts, shipped, loose), check_exact=True)
    pd.testing.assert_frame_equal(fast, act_findings(raw, acts, shipped, loose), check_exact=True)
