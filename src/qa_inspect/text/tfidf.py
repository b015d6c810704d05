"""TF-IDF of a fitted scikit-learn ``TfidfVectorizer`` from features counted in bulk.

scikit-learn's ``transform`` counts features with one dict lookup and one counter update per
feature in Python; the act model and the FAQ matcher both spent about half their time there. Here
a batch's features are looked up at once and the counts go through the vectorizer's own fitted
TF-IDF step, so the matrix is the one ``vec.transform`` gives, bit for bit (the callers' tests
compare with it). Callers decide which vectorizer settings their feature lists reproduce.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import repeat

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer


def feature_cells(features: Iterable[list[str]], vocabulary: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every in-vocabulary feature of every document, one cell per occurrence."""
    flat: list[str] = []
    lengths: list[int] = []
    for feats in features:
        flat.extend(feats)
        lengths.append(len(feats))
    cols = np.fromiter(map(vocabulary.get, flat, repeat(-1)), dtype=np.int64, count=len(flat))
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), np.asarray(lengths, dtype=np.int64))
    known = cols >= 0
    return rows[known], cols[known]


def weigh_cells(vec: TfidfVectorizer, rows: np.ndarray, cols: np.ndarray, n_docs: int) -> sparse.csr_matrix:
    """The count matrix of the cells (duplicates summed, indices sorted, as sklearn's counts are)
    weighted by ``vec``'s fitted TfidfTransformer (sublinear tf, idf, norm)."""
    counts = sparse.csr_matrix((np.ones(len(rows), dtype=vec.dtype), (rows, cols)),
                               shape=(n_docs, len(vec.vocabulary_)), dtype=vec.dtype)
    counts.sum_duplicates()
    return sparse.csr_matrix(vec._tfidf.transform(counts, copy=False))
