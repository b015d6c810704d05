"""Bulk n-gram counting and reused act features give exactly what scikit-learn / a fresh
vectorisation give.

``tfidf_transform`` replaces sklearn's per-n-gram counting loop (char_wb n-grams as integer keys
over code points, token n-grams through one ``map``); ``token_ngrams`` skips its regex for
alphanumeric tokens; ``act_findings`` reuses the features ``predict_acts_with_features`` made.
Each is compared with the straightforward path on edge cases: whitespace of every kind, case
folding that changes length, astral characters, NUL, out-of-vocabulary text, empty documents.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_test_helpers import agent_partition
from reference_stages import ref_act_findings_frame, ref_predict_act_frame
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from qa_inspect import schema
from qa_inspect.ingest import ingest_paths
from qa_inspect.models import Models, act_findings, predict_acts, predict_acts_with_features
from qa_inspect.models.features import (
    act_inputs,
    act_matrix,
    ensure_text_columns,
    tfidf_transform,
    token_ngrams,
)

EDGE_DOCS = [
    "", " ", "\t\n", "  \u3000 ", "亲 在的哦", "亲\u3000\u3000在的", "a\x1c\x1cb", "ABC Def ÄÖÜ", "İstanbul ΣΑΣ",
    "\x00a", "😀😀 好的😀", "好好好好好好 好好", "您好，欢迎光临！请问有什么可以帮您？", "x" * 300,
    "订单号123456789012 已经发货了哈", "thé café", "a\r\nb\fc\vd", "退款 退款 退款", "？？？？",
]
RAW_DOCS = [*EDGE_DOCS, "\ud800孤立"]  # a lone surrogate: fine for sklearn, not for an Arrow string column


def _same_matrix(got: sparse.csr_matrix, want: object) -> None:
    want = sparse.csr_matrix(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.has_sorted_indices and want.has_sorted_indices
    assert np.array_equal(got.indptr, want.indptr)
    assert np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.data, want.data)  # bit for bit, not approximately


@pytest.fixture(scope="module")
def corpus(sample_logs_dir: Path, rules_dir: Path) -> list[str]:
    msgs = ingest_paths(sample_logs_dir, rules_dir=rules_dir).messages
    return [str(t) for t in msgs[schema.TEXT].head(400)]


def test_shipped_act_vectorizers_count_like_sklearn(shipped: Models, corpus: list[str]) -> None:
    docs = [*EDGE_DOCS, *corpus[:150]]
    prepared = ensure_text_columns(pd.DataFrame({schema.TEXT: docs}))
    inputs = act_inputs(prepared)
    ct = shipped.acts.vectorizer
    for _, vec, col in ct.transformers_:
        _same_matrix(tfidf_transform(vec, inputs[col].to_numpy(dtype=object)), vec.transform(inputs[col]))
    got = act_matrix(ct, inputs)
    _same_matrix(got, ct.transform(inputs))
    assert got.nnz > 1000 and (got.getnnz(axis=1) == 0).any()  # real features, and some empty rows
    _same_matrix(act_matrix(ct, inputs.iloc[:1]), ct.transform(inputs.iloc[:1]))


@pytest.mark.parametrize("params", [
    {"ngram_range": (1, 3)}, {"ngram_range": (2, 3)}, {"ngram_range": (1, 1)}, {"ngram_range": (3, 3)},
    {"ngram_range": (2, 5)},  # n > 3: the string path with sklearn's short-word rule
    {"ngram_range": (1, 3), "lowercase": False}, {"ngram_range": (1, 2), "strip_accents": "unicode"},
    {"ngram_range": (1, 3), "sublinear_tf": True, "norm": "l1", "use_idf": False},
    {"ngram_range": (1, 3), "dtype": np.float32},
])
def test_char_wb_settings_count_like_sklearn(params: dict, corpus: list[str]) -> None:
    vec = TfidfVectorizer(analyzer="char_wb", min_df=2, **params).fit(corpus + EDGE_DOCS)
    docs = RAW_DOCS + corpus[::7] + ["完全没见过的字龘靐"]
    _same_matrix(tfidf_transform(vec, docs), vec.transform(docs))
    for fn in (tfidf_transform, type(vec).transform):  # no documents: sklearn refuses, so do we
        with pytest.raises(ValueError):
            fn(vec, [])


def test_other_vectorizers_fall_back_to_sklearn(corpus: list[str]) -> None:
    for vec in (TfidfVectorizer(analyzer="char", ngram_range=(1, 2)), TfidfVectorizer(binary=True),
                TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 2), binary=True)):
        vec.fit(corpus)
        _same_matrix(tfidf_transform(vec, corpus[:50]), vec.transform(corpus[:50]))


_TEXT = st.text(alphabet=st.sampled_from(list("ab Ab好的亲\u3000\t\n？！_·ΣİI😀\x00\x1c\ud800")), max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.lists(_TEXT, min_size=1, max_size=8))
def test_char_wb_counts_any_text(docs: list[str]) -> None:
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True).fit(
        ["ab 好的 亲亲", "AB Σς i̇ 😀x", "__ ·· ？！"])
    _same_matrix(tfidf_transform(vec, docs), vec.transform(docs))


_PUNCT = re.compile(r"[\s\W_]+")


def _ref_token_ngrams(tokens: list[str]) -> list[str]:
    words = [t for t in tokens if t.strip() and not _PUNCT.fullmatch(t)]
    return words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("a1_ ，。好²\u200b\u0301\t·Σ😀-")), max_size=4),
                max_size=10))
def test_token_ngrams_is_the_regex_definition(tokens: list[str]) -> None:
    assert token_ngrams(tokens) == _ref_token_ngrams(tokens)


def test_token_ngrams_examples() -> None:
    toks = ["好的", "，", " ", "_", "a_b", "²", "\u200b", "亲", "x\u0301", "..."]
    assert token_ngrams(toks) == _ref_token_ngrams(toks)
    assert "a_b" in token_ngrams(toks) and "_" not in token_ngrams(toks)


def test_reused_features_give_the_same_findings(shipped: Models, thresholds, corpus: list[str]) -> None:
    texts = [t for t in corpus if len(t) > 3][:120] + ["你是不是没看详情页啊", "亲，这款今天下单立减哦", "抱歉让您久等了"]
    part = agent_partition(texts)
    acts, feats = predict_acts_with_features(part, shipped)
    pd.testing.assert_frame_equal(acts, ref_predict_act_frame(part, shipped.acts), check_exact=True)
    pd.testing.assert_frame_equal(acts, predict_acts(part, shipped), check_exact=True)
    with_x = act_findings(part, acts, shipped, thresholds, feats)
    without = act_findings(part, acts, shipped, thresholds)
    ref = ref_act_findings_frame(part, acts, shipped.acts, thresholds)
    assert len(ref) >= 3
    pd.testing.assert_frame_equal(with_x, without)
    key = [schema.CONVERSATION_ID, schema.MESSAGE_INDEX, schema.RULE_ID]
    pd.testing.assert_frame_equal(with_x.sort_values(key, kind="stable").reset_index(drop=True),
                                  ref.sort_values(key, kind="stable").reset_index(drop=True))
    # Shuffled acts still match by (conversation_id, seq) with the reused features.
    shuffled = acts.sample(frac=1.0, random_state=5).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        act_findings(part, shuffled, shipped, thresholds, feats).sort_values(key, kind="stable")
        .reset_index(drop=True),
        ref_act_findings_frame(part, shuffled, shipped.acts, thresholds).sort_values(key, kind="stable")
        .reset_index(drop=True))


def test_features_of_another_partition_are_not_used(shipped: Models, thresholds) -> None:
    part = agent_partition(["你是不是没看详情页啊", "亲，这款今天下单立减哦", "抱歉让您久等了"])
    other = agent_partition(["好的", "抱歉让您久等了", "你自己看详情页"])
    _, other_x = predict_acts_with_features(other, shipped)
    assert not other_x.usable_for(part, shipped.acts.__class__(**vars(shipped.acts)), 3)  # another model
    acts = predict_acts(part, shipped)
    got = act_findings(part, acts, shipped, thresholds, other_x)  # same size, other texts
    pd.testing.assert_frame_equal(got, act_findings(part, acts, shipped, thresholds))
    bigger = agent_partition(["好的", "好的", "抱歉让您久等了", "亲"])
    _, big_x = predict_acts_with_features(bigger, shipped)
    pd.testing.assert_frame_equal(act_findings(part, acts, shipped, thresholds, big_x),
                                  act_findings(part, acts, shipped, thresholds))


_TOKENS = ["好的", "亲", "，", " ", "a b", "_", "在", "Σ", "x_1", "。。", "\t", "退款"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_TOKENS), max_size=12), min_size=1, max_size=10))
def test_token_ngram_counts_any_tokens(docs: list[list[str]]) -> None:
    """Word uni/bigrams counted per distinct token and pair == sklearn with ``token_ngrams``."""
    rng = np.random.default_rng(0)
    train = [list(rng.choice(_TOKENS, size=int(rng.integers(0, 9)))) for _ in range(80)]
    vec = TfidfVectorizer(analyzer=token_ngrams, min_df=2, sublinear_tf=True).fit(train)
    _same_matrix(tfidf_transform(vec, docs), vec.transform(docs))
    _same_matrix(tfidf_transform(vec, train), vec.transform(train))


def test_top_words_for_many_pairs_is_the_per_row_walk(shipped: Models, corpus: list[str]) -> None:
    """Batch top n-grams == per-row ``_top_words``, also with tied contributions and substrings."""
    from qa_inspect.models.acts import ActModel, _top_words, _top_words_many

    inputs = act_inputs(ensure_text_columns(pd.DataFrame({schema.TEXT: corpus[:200]})))
    x = act_matrix(shipped.acts.vectorizer, inputs)
    rng = np.random.default_rng(1)
    rows = rng.integers(0, x.shape[0], 400)
    labs = rng.integers(0, len(shipped.acts.labels), 400)

    def per_row(model: ActModel, m: sparse.csr_matrix, r: np.ndarray, lp: np.ndarray) -> list[list[str]]:
        return [_top_words(model, m.indices[m.indptr[i]:m.indptr[i + 1]], m.data[m.indptr[i]:m.indptr[i + 1]], j)
                for i, j in zip(r.tolist(), lp.tolist(), strict=True)]

    got = _top_words_many(shipped.acts, x, rows, labs)
    assert got == per_row(shipped.acts, x, rows, labs) and sum(map(len, got)) > 200
    # Ties everywhere (equal tf-idf x coefficient), n-grams that contain each other, negatives.
    names = np.array(["w__好", "w__好的", "c__的", "c__亲", "w__好的亲", "c__ ", "w__哦"], dtype=object)
    coefs = np.array([[1, 1, 1, 1, 1, 1, -1], [0.5, 1, 1, 0, 2, 1, 1]], dtype=np.float32)
    toy = ActModel(None, None, ("a", "b"), names, coefs)  # type: ignore[arg-type]
    m = sparse.csr_matrix(np.array([[1, 1, 1, 1, 1, 1, 1], [0.5, 0.5, 0, 0.5, 0.25, 0.5, 0.5],
                                    [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=np.float64))
    rows = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    labs = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    assert _top_words_many(toy, m, rows, labs) == per_row(toy, m, rows, labs)
    nan_coefs = toy.coefs.copy()
    nan_coefs[0, 2] = np.nan
    toy_nan = ActModel(None, None, ("a", "b"), names, nan_coefs)  # type: ignore[arg-type]
    assert _top_words_many(toy_nan, m, rows, labs) == per_row(toy_nan, m, rows, labs)


@pytest.mark.realdata
def test_real_jddc_acts_and_findings_match_reference(shared_data: Path, rules_dir: Path, shipped: Models,
                                                     thresholds) -> None:
    """Real JD chats (far less repetitive than the benchmark): bulk features, reused for the
    findings, give the reference acts and findings exactly."""
    msgs = ingest_paths([shared_data / "jddc" / "chat_sample.tsv"], rules_dir=rules_dir).messages
    ids = pd.unique(msgs[schema.CONVERSATION_ID])[:300]
    part = ensure_text_columns(msgs[msgs[schema.CONVERSATION_ID].isin(set(ids))].reset_index(drop=True))
    acts, feats = predict_acts_with_features(part, shipped)
    pd.testing.assert_frame_equal(acts, ref_predict_act_frame(part, shipped.acts), check_exact=True)
    got = act_findings(part, acts, shipped, thresholds, feats)
    ref = ref_act_findings_frame(part, acts, shipped.acts, thresholds)
    assert len(ref) > 50
    key = [schema.CONVERSATION_ID, schema.MESSAGE_INDEX, schema.RULE_ID]
    pd.testing.assert_frame_equal(got.sort_values(key, kind="stable").reset_index(drop=True),
                                  ref.sort_values(key, kind="stable").reset_index(drop=True))


def _ref_finding_counts(findings: pd.DataFrame | None, index: pd.Index) -> pd.DataFrame:
    """The per-group .loc loop finding_counts replaced (the definition)."""
    names = [f"f_{d}_{'pos' if p == '+' else 'neg'}" for d in schema.DIMENSIONS for p in schema.POLARITIES]
    out = pd.DataFrame(0.0, index=index, columns=names)
    if findings is None or findings.empty:
        return out
    for (cid, d, p), n in findings.groupby([schema.CONVERSATION_ID, schema.DIMENSION,
                                            schema.POLARITY]).size().items():
        col = f"f_{d}_{'pos' if p == '+' else 'neg'}"
        if cid in out.index and col in out.columns:
            out.loc[cid, col] = float(n)
    return out


def test_finding_counts_match_the_loop() -> None:
    """Unknown dimensions, two polarities that both count as "neg" (the later group wins),
    conversations absent from the index, missing ids, an index with a repeated label."""
    from qa_inspect.models.features import finding_counts

    rng = np.random.default_rng(2)
    n = 500
    f = schema.empty_findings().reindex(range(n))
    f[schema.CONVERSATION_ID] = pd.array(rng.choice(["c1", "c2", "c3", "zz", None], n), dtype="string")
    f[schema.DIMENSION] = pd.array(rng.choice([*schema.DIMENSIONS, "other"], n), dtype="string")
    f[schema.POLARITY] = pd.array(rng.choice(["+", "-", "x"], n), dtype="string")
    for index in (pd.Index(["c1", "c2", "c3", "c4"]), pd.Index(["c3", "c1"], dtype="string"),
                  pd.Index(["c1", "c2", "c1"]), pd.Index([], dtype="string")):
        pd.testing.assert_frame_equal(finding_counts(f, index), _ref_finding_counts(f, index))
        pd.testing.assert_frame_equal(finding_counts(f.iloc[0:0], index), _ref_finding_counts(f.iloc[0:0], index))
    got = finding_counts(f, pd.Index(["c1", "c2"]))
    assert got.to_numpy().sum() > 0
