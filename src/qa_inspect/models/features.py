"""Features shared by the act and risk models.

The act model reads the shared text stages' output (``norm_text`` and jieba ``tokens``) so the
model sees exactly what the rules see; when a caller hands raw text (training CSV, STC-3), the
same text stages are run here. The feature-set ids are written into model cards: change the
feature code -> bump the id -> old models refuse to load instead of scoring garbage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import chain, repeat

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer

from qa_inspect import schema
from qa_inspect.config import default_rules_dir
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tfidf import feature_cells, weigh_cells
from qa_inspect.text.tokenize import Tokenizer, tokenize

ACT_FEATURE_SET = "acts-v1:tokens-tfidf-1-2+chars-tfidf-1-3"
RISK_FEATURE_SET = "risk-v1:ridge-oof-text+structure+acts"


@lru_cache(maxsize=2)
def _default_tokenizer(rules_dir: str) -> Tokenizer:
    # Pure configuration object: caching it saves the jieba dictionary load, never changes tokens.
    return Tokenizer.from_rules(rules_dir)


def ensure_text_columns(messages: pd.DataFrame, tokenizer: Tokenizer | None = None) -> pd.DataFrame:
    """Add ``norm_text``/``tokens`` when absent (raw training data); keep them when present."""
    out = messages
    if schema.NORM_TEXT not in out.columns:
        out = normalize(out)
    if schema.TOKENS not in out.columns:
        out = tokenize(out, tokenizer or _default_tokenizer(str(default_rules_dir())))
    return out


def token_ngrams(tokens: Sequence[str]) -> list[str]:
    """Word unigrams and bigrams; whitespace/punctuation-only tokens dropped (module-level: picklable).

    ``t.isalnum()`` settles most tokens without the regex: an all-alphanumeric token is never
    blank and never whitespace/punctuation only (``\\w`` is alnum or ``_``), so the result is the
    regex definition's.
    """
    words = [t for t in tokens if t.isalnum() or (t.strip() and not _PUNCT.fullmatch(t))]
    return words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]


_PUNCT = re.compile(r"[\s\W_]+")
_WHITE_SPACES = re.compile(r"\s\s+")  # scikit-learn's char_wb whitespace normalisation


def _char_wb_ngrams(doc: str, lo: int, hi: int, out: list[str]) -> None:
    """scikit-learn's ``_char_wb_ngrams`` appended to ``out``: one list comprehension per n
    instead of one ``append`` per n-gram. A padded word no longer than n counts once, and
    stops the larger n (as its ``offset == 0`` break does)."""
    for w in _WHITE_SPACES.sub(" ", doc).split():
        w = " " + w + " "
        length = len(w)
        for n in range(lo, hi + 1):
            if length <= n:
                out.append(w)
                break
            out.extend([w[i:i + n] for i in range(length - n + 1)])


_CP_BITS = 21  # code point + 1 < 2**21: up to three characters make one int64 key, distinct per length


def _code_points(text: str) -> np.ndarray:
    """Code point + 1 of every character (never 0, so "a" and "\\0a" get different keys)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64) + 1


def _vocabulary_keys(vocabulary: dict[str, int], hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted int keys, their column) of the vocabulary terms of 1..hi characters; the
    others can never be an n-gram of length <= hi."""
    terms = [t for t in vocabulary if 0 < len(t) <= hi]
    lens = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
    cp = _code_points("".join(terms))
    start = np.cumsum(lens) - lens
    keys = cp[start] if len(terms) else np.zeros(0, dtype=np.int64)
    for k in range(1, hi):
        m = lens > k
        keys[m] = (keys[m] << _CP_BITS) | cp[start[m] + k]
    cols = np.fromiter(map(vocabulary.__getitem__, terms), dtype=np.int64, count=len(terms))
    order = np.argsort(keys, kind="stable")
    return keys[order], cols[order]


_VOCAB_KEYS_ATTR = "_qa_vocabulary_keys"


def _fitted_vocabulary_keys(vec: TfidfVectorizer, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """``_vocabulary_keys`` of a fitted vectorizer, kept on the vectorizer itself: they depend
    on its vocabulary only (a model constant, 20 000 terms: ~1.5 ms per partition when rebuilt),
    not on any text. Rebuilt when the vocabulary object or its size changes."""
    vocabulary = vec.vocabulary_
    held = vec.__dict__.get(_VOCAB_KEYS_ATTR)
    if held is not None and held[0] is vocabulary and held[1] == len(vocabulary) and held[2] == hi:
        return held[3], held[4]
    vkeys, vcols = _vocabulary_keys(vocabulary, hi)
    vkeys.setflags(write=False)
    vcols.setflags(write=False)
    vec.__dict__[_VOCAB_KEYS_ATTR] = (vocabulary, len(vocabulary), hi, vkeys, vcols)
    return vkeys, vcols


def _char_wb_cells(vec: TfidfVectorizer, docs: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every in-vocabulary char_wb n-gram of ``docs`` (n <= 3), one pair per
    occurrence, with array arithmetic over code points instead of one string per n-gram.

    Words come from the vectorizer's own decoder and preprocessor and sklearn's whitespace
    rule; a padded word " w " has at least 3 characters, so for n <= 3 its n-grams are exactly
    its len - n + 1 windows (sklearn's short-word rule never applies).
    """
    lo, hi = vec.ngram_range
    decode, preprocess = vec.decode, vec.build_preprocessor()
    pieces: list[str] = []
    word_len: list[int] = []
    n_words = np.zeros(len(docs), dtype=np.int64)
    for i, doc in enumerate(docs):
        words = _WHITE_SPACES.sub(" ", preprocess(decode(doc))).split()
        if words:
            pieces.append(" " + "  ".join(words) + " ")  # the padded words, back to back
            word_len.extend(map(len, words))
            n_words[i] = len(words)
    cp = _code_points("".join(pieces))
    padded = np.asarray(word_len, dtype=np.int64) + 2
    word_end = np.repeat(np.cumsum(padded), padded)  # per character: end of its padded word
    doc_of = np.repeat(np.repeat(np.arange(len(docs), dtype=np.int64), n_words), padded)
    pos = np.arange(len(cp), dtype=np.int64)
    vkeys, vcols = _fitted_vocabulary_keys(vec, hi)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for n in range(lo, hi + 1):
        at = pos[pos + n <= word_end]
        keys = cp[at]
        for k in range(1, n):
            keys = (keys << _CP_BITS) | cp[at + k]
        j = np.minimum(np.searchsorted(vkeys, keys), max(len(vkeys) - 1, 0))
        hit = vkeys[j] == keys if len(vkeys) else np.zeros(len(keys), dtype=bool)
        rows.append(doc_of[at[hit]])
        cols.append(vcols[j[hit]])
    return np.concatenate(rows), np.concatenate(cols)


def _is_word(t: str) -> bool:
    """``token_ngrams``' filter: not blank and not whitespace/punctuation only."""
    return t.isalnum() or bool(t.strip() and not _PUNCT.fullmatch(t))


def _token_ngram_cells(docs: Sequence[list[str]], vocabulary: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every in-vocabulary ``token_ngrams`` n-gram of ``docs`` (token lists).

    The batch's tokens are factorized once; the word filter and the unigram lookup run per
    distinct token, and each distinct adjacent word pair is joined ("a b") and looked up once,
    instead of one filter call, one string and one lookup per token and pair.
    """
    lens = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    flat = np.empty(int(lens.sum()), dtype=object)
    flat[:] = list(chain.from_iterable(docs))
    codes, uniq = pd.factorize(flat)
    words = np.asarray(uniq, dtype=object).tolist()
    keep = np.fromiter(map(_is_word, words), dtype=bool, count=len(words))[codes]
    w = codes[keep].astype(np.int64)
    doc_of = np.repeat(np.arange(len(docs), dtype=np.int64), lens)[keep]
    uni_col = np.fromiter(map(vocabulary.get, words, repeat(-1)), dtype=np.int64, count=len(words))
    # Adjacent words of one document form a bigram (token_ngrams zips each document's words).
    same = doc_of[1:] == doc_of[:-1]
    pair_codes, pairs = pd.factorize(w[:-1][same] * len(words) + w[1:][same])
    first, second = np.divmod(np.asarray(pairs, dtype=np.int64), len(words))
    bigrams = [words[a] + " " + words[b] for a, b in zip(first.tolist(), second.tolist(), strict=True)]
    pair_col = np.fromiter(map(vocabulary.get, bigrams, repeat(-1)), dtype=np.int64, count=len(bigrams))
    rows = np.concatenate([doc_of, doc_of[1:][same]])
    cols = np.concatenate([uni_col[w], pair_col[pair_codes]])
    known = cols >= 0
    return rows[known], cols[known]


def _fast_tfidf_ok(vec: object) -> bool:
    """The fitted TfidfVectorizer settings tfidf_transform reproduces; others use sklearn's own."""
    return (isinstance(vec, TfidfVectorizer) and hasattr(vec, "vocabulary_") and hasattr(vec, "_tfidf")
            and not vec.binary and vec.dtype in (np.float64, np.float32) and vec.input == "content"
            and (callable(vec.analyzer) or vec.analyzer == "char_wb"))


def tfidf_transform(vec: TfidfVectorizer, docs: Sequence[object]) -> sparse.csr_matrix:
    """``vec.transform(docs)``, the same matrix bit for bit, with the counting done in bulk.

    sklearn counts n-grams in a Python loop with one dict lookup and one counter update per
    n-gram (half of the act model's cost). Here the n-grams of the whole batch are looked up at
    once: ``char_wb`` n-grams (n <= 3) as integer keys over code points (``_char_wb_cells``),
    the n-grams of a callable analyzer (the act model's ``token_ngrams``) with ``map(dict.get)``.
    Duplicates within a document are summed by the CSR conversion, which also sorts the column
    indices as sklearn's ``sort_indices`` does; the counts then go through the vectorizer's own
    fitted TfidfTransformer (sublinear tf, idf, l2 norm). Settings it does not reproduce fall
    back to ``vec.transform``.
    """
    if not _fast_tfidf_ok(vec) or isinstance(docs, str):
        return sparse.csr_matrix(vec.transform(docs))
    vocabulary = vec.vocabulary_
    if vec.analyzer is token_ngrams and all(type(d) is list for d in docs):
        rows, cols = _token_ngram_cells(docs, vocabulary)
    elif callable(vec.analyzer):
        rows, cols = feature_cells(map(vec.build_analyzer(), docs), vocabulary)
    elif vec.ngram_range[1] > 3 or vec.ngram_range[0] < 1:
        decode, preprocess = vec.decode, vec.build_preprocessor()
        lo, hi = vec.ngram_range

        def grams(doc: object) -> list[str]:
            out: list[str] = []
            _char_wb_ngrams(preprocess(decode(doc)), lo, hi, out)
            return out

        rows, cols = feature_cells(map(grams, docs), vocabulary)
    else:
        rows, cols = _char_wb_cells(vec, docs)
    return weigh_cells(vec, rows, cols, len(docs))


def act_matrix(vectorizer: ColumnTransformer, inputs: pd.DataFrame) -> sparse.csr_matrix:
    """``vectorizer.transform(inputs)`` (as CSR) for the act model's ColumnTransformer of
    TfidfVectorizers, each block through ``tfidf_transform`` and stacked as ColumnTransformer
    stacks them; any other layout goes through ``vectorizer.transform``."""
    fitted = getattr(vectorizer, "transformers_", None)
    if (not isinstance(vectorizer, ColumnTransformer) or fitted is None
            or not getattr(vectorizer, "sparse_output_", False) or vectorizer.transformer_weights is not None
            or not all(isinstance(c, str) and _fast_tfidf_ok(tr) for _, tr, c in fitted)
            or not all(c in inputs.columns for _, _, c in fitted)):
        return sparse.csr_matrix(vectorizer.transform(inputs))
    blocks = [tfidf_transform(tr, inputs[c].to_numpy(dtype=object)) for _, tr, c in fitted]
    return sparse.csr_matrix(sparse.hstack(blocks).tocsr())


def act_vectorizer() -> ColumnTransformer:
    """Word n-grams over the shared tokens plus char n-grams (robust to tokenizer misses)."""
    return ColumnTransformer(
        [
            ("w", TfidfVectorizer(analyzer=token_ngrams, min_df=2, sublinear_tf=True), schema.TOKENS),
            ("c", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=3, sublinear_tf=True,
                                  max_features=20000), schema.NORM_TEXT),
        ]
    )


def act_inputs(messages: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        schema.TOKENS: [list(t) for t in messages[schema.TOKENS]],
        schema.NORM_TEXT: messages[schema.NORM_TEXT].astype(str).to_numpy(),
    })


def key_rows(cids: pd.Series, seqs: np.ndarray, q_cids: pd.Series, q_seqs: np.ndarray) -> np.ndarray:
    """Row of each query (conversation_id, seq) key in a table, -1 where absent; a repeated key
    maps to its last row, as a dict filled row by row would.

    One factorisation of the ids and an integer hash join instead of one Python tuple per row;
    keys with a missing conversation id or non-integer seqs take the dict route (its equality
    rules are the definition).
    """
    seqs, q_seqs = np.asarray(seqs), np.asarray(q_seqs)
    n, nq = len(cids), len(q_cids)
    if not nq:
        return np.zeros(0, dtype=np.intp)
    if not n:
        return np.full(nq, -1, dtype=np.intp)
    if seqs.dtype.kind in "iu" and q_seqs.dtype.kind in "iu":
        both = pd.concat([cids.reset_index(drop=True), q_cids.reset_index(drop=True)], ignore_index=True)
        codes, uniq = pd.factorize(both)
        s_all = np.concatenate([seqs.astype(np.int64), q_seqs.astype(np.int64)])
        lo, span = int(s_all.min()), int(s_all.max()) - int(s_all.min()) + 1
        if codes.min() >= 0 and len(uniq) * span < 2 ** 62:
            keys = codes.astype(np.int64) * span + (s_all - lo)
            t_keys = keys[:n]
            last = ~pd.Series(t_keys).duplicated(keep="last").to_numpy()
            rows = np.flatnonzero(last)
            found = pd.Index(t_keys[last]).get_indexer(keys[n:])
            return np.where(found >= 0, rows[np.maximum(found, 0)], -1).astype(np.intp)
    row_of = {k: r for r, k in enumerate(zip(cids.to_numpy(dtype=object).tolist(), seqs.tolist(), strict=True))}
    return np.fromiter((row_of.get(k, -1) for k in zip(q_cids.to_numpy(dtype=object).tolist(), q_seqs.tolist(),
                                                        strict=True)), dtype=np.intp, count=nq)


# --- conversation structure (risk model) -------------------------------------------------
NEGATIVE_CUES = (
    "投诉", "差评", "垃圾", "骗", "态度", "无语", "失望", "生气", "愤怒", "恶心", "坑", "呵呵", "还没", "怎么还",
    "为什么", "到底", "什么时候", "多少次", "几天了", "没人", "不管", "不理", "敷衍", "退款", "退货", "赔偿",
    "举报", "12315", "工信部", "消协", "太差", "差劲", "再也不", "不满", "怒", "抓狂", "衰", "泪", "？？", "!!",
)
POSITIVE_CUES = ("谢谢", "感谢", "好的", "解决了", "满意", "赞", "给力", "辛苦", "哈哈", "收到", "可以了", "好评",
                 "ok", "OK", "嘻嘻", "爱你", "鼓掌", "好吧")
AGENT_ACTION_CUES = ("已", "为您", "帮您", "处理", "反馈", "核实", "安排", "私信", "联系", "提供", "请您", "稍等",
                     "马上", "尽快", "抱歉", "歉意", "不便", "理解")


def _count(text: str, cues: Sequence[str]) -> int:
    return sum(text.count(c) for c in cues)


def _bigrams(text: str) -> set[str]:
    return {text[i:i + 2] for i in range(max(len(text) - 1, 0))}


def _max_repeat(texts: list[str]) -> float:
    """Highest char-bigram Jaccard between two customer messages: the customer asking again."""
    grams = [_bigrams(t) for t in texts if len(t) >= 4]
    best = 0.0
    for i in range(len(grams)):
        for j in range(i + 1, len(grams)):
            union = len(grams[i] | grams[j])
            if union:
                best = max(best, len(grams[i] & grams[j]) / union)
    return best


def turn_runs(roles: Sequence[str]) -> list[tuple[str, int, int]]:
    """Consecutive same-role messages form one turn: (role, start, end) over positions."""
    runs: list[tuple[str, int, int]] = []
    for i, r in enumerate(roles):
        if runs and runs[-1][0] == r:
            runs[-1] = (r, runs[-1][1], i + 1)
        else:
            runs.append((r, i, i + 1))
    return runs


STRUCT_FEATURES = (
    "n_messages", "n_turns", "n_customer", "n_agent", "customer_ratio", "has_agent", "last_is_agent",
    "cust_len_mean", "cust_len_max", "cust_len_first", "cust_len_last", "agent_len_mean", "agent_len_last",
    "cust_q", "cust_excl", "cust_neg", "cust_pos", "last_cust_neg", "last_cust_pos", "last_cust_q",
    "first_cust_neg", "agent_action", "agent_q", "cust_repeat", "agent_after_last_cust",
    "n_cust_turns_after_agent",
)


def conversations_in_order(messages: pd.DataFrame) -> Iterator[tuple[object, list[str], list[str]]]:
    """(conversation_id, roles, norm texts) per conversation, in order of first appearance, by seq.

    One factorize + one sort over the partition instead of a pandas group and sort per
    conversation (that overhead dominated the risk features). Bots count as the agent side.
    """
    if messages.empty:
        return
    codes, uniques = pd.factorize(messages[schema.CONVERSATION_ID], sort=False)  # NaN ids: -1, skipped
    seq = messages[schema.SEQ].to_numpy()
    order = np.lexsort((seq, codes))
    codes_sorted = codes[order]
    order = order[codes_sorted >= 0]
    codes_sorted = codes_sorted[codes_sorted >= 0]
    roles_all = ["agent" if r in ("agent", "bot") else str(r)
                 for r in messages[schema.ROLE].to_numpy(dtype=object)[order].tolist()]
    texts_all = [str(t) for t in messages[schema.NORM_TEXT].to_numpy(dtype=object)[order].tolist()]
    bounds = np.flatnonzero(np.diff(codes_sorted)) + 1
    starts = [0, *bounds.tolist()]
    ends = [*bounds.tolist(), len(codes_sorted)]
    for a, b in zip(starts, ends, strict=True):
        yield uniques[codes_sorted[a]], roles_all[a:b], texts_all[a:b]


def conversation_structure(messages: pd.DataFrame) -> pd.DataFrame:
    """One row per conversation with turn-structure and cue counts (index: conversation_id)."""
    rows = []
    for cid, roles, texts in conversations_in_order(messages):
        cust = [t for t, r in zip(texts, roles, strict=True) if r == "customer"]
        agent = [t for t, r in zip(texts, roles, strict=True) if r == "agent"]
        runs = turn_runs(roles)
        cruns = [" ".join(texts[s:e]) for r, s, e in runs if r == "customer"]
        last_c = cruns[-1] if cruns else ""
        first_c = cruns[0] if cruns else ""
        cjoin = " ".join(cust)
        ajoin = " ".join(agent)
        last_cust_pos = max((i for i, r in enumerate(roles) if r == "customer"), default=-1)
        first_agent = next((i for i, r in enumerate(roles) if r == "agent"), len(roles))
        rows.append({
            schema.CONVERSATION_ID: cid,
            "n_messages": len(texts),
            "n_turns": len(runs),
            "n_customer": len(cust),
            "n_agent": len(agent),
            "customer_ratio": len(cust) / max(len(texts), 1),
            "has_agent": float(bool(agent)),
            "last_is_agent": float(bool(roles) and roles[-1] == "agent"),
            "cust_len_mean": float(np.mean([len(t) for t in cust])) if cust else 0.0,
            "cust_len_max": max((len(t) for t in cust), default=0),
            "cust_len_first": len(first_c),
            "cust_len_last": len(last_c),
            "agent_len_mean": float(np.mean([len(t) for t in agent])) if agent else 0.0,
            "agent_len_last": len(agent[-1]) if agent else 0,
            "cust_q": cjoin.count("?") + cjoin.count("？") + cjoin.count("吗"),
            "cust_excl": cjoin.count("!") + cjoin.count("！"),
            "cust_neg": _count(cjoin, NEGATIVE_CUES),
            "cust_pos": _count(cjoin, POSITIVE_CUES),
            "last_cust_neg": _count(last_c, NEGATIVE_CUES),
            "last_cust_pos": _count(last_c, POSITIVE_CUES),
            "last_cust_q": last_c.count("?") + last_c.count("？"),
            "first_cust_neg": _count(first_c, NEGATIVE_CUES),
            "agent_action": _count(ajoin, AGENT_ACTION_CUES),
            "agent_q": ajoin.count("?") + ajoin.count("？"),
            "cust_repeat": _max_repeat(cust),
            "agent_after_last_cust": float(any(r == "agent" for r in roles[last_cust_pos + 1:])),
            "n_cust_turns_after_agent": sum(1 for r, s, _ in runs if r == "customer" and s > first_agent),
        })
    if not rows:
        return pd.DataFrame(columns=[schema.CONVERSATION_ID, *STRUCT_FEATURES]).set_index(
            schema.CONVERSATION_ID)
    return pd.DataFrame(rows).set_index(schema.CONVERSATION_ID)


def conversation_texts(messages: pd.DataFrame) -> pd.DataFrame:
    """Per conversation: all text, customer text, agent text, last customer turn (for ridge stage)."""
    rows = []
    for cid, roles, texts in conversations_in_order(messages):
        runs = turn_runs(roles)
        cruns = [" ".join(texts[s:e]) for r, s, e in runs if r == "customer"]
        rows.append({
            schema.CONVERSATION_ID: cid,
            "all": " | ".join(f"{'C' if r == 'customer' else 'A'}:{t}" for r, t in zip(roles, texts,
                                                                                       strict=True)),
            "customer": " ".join(t for t, r in zip(texts, roles, strict=True) if r == "customer"),
            "agent": " ".join(t for t, r in zip(texts, roles, strict=True) if r == "agent"),
            "last_customer": cruns[-1] if cruns else "",
        })
    return pd.DataFrame(rows, columns=[schema.CONVERSATION_ID, "all", "customer", "agent",
                                       "last_customer"]).set_index(schema.CONVERSATION_ID)


def act_aggregates(acts: pd.DataFrame | None, index: pd.Index) -> pd.DataFrame:
    """Mean and max of each act probability over a conversation's agent messages (0 when none)."""
    cols = [schema.act_column(a) for a in schema.ACT_LABELS]
    names = [f"{s}_{c}" for s in ("mean", "max") for c in cols]
    if acts is None or acts.empty:
        return pd.DataFrame(0.0, index=index, columns=names)
    g = acts.groupby(schema.CONVERSATION_ID)[cols]
    agg = pd.concat([g.mean().add_prefix("mean_"), g.max().add_prefix("max_")], axis=1)
    return agg.reindex(index).fillna(0.0)[names]


def finding_counts(findings: pd.DataFrame | None, index: pd.Index) -> pd.DataFrame:
    """Counts of findings per dimension and polarity, per conversation."""
    names = [f"f_{d}_{'pos' if p == '+' else 'neg'}" for d in schema.DIMENSIONS for p in schema.POLARITIES]
    out = pd.DataFrame(0.0, index=index, columns=names)
    if findings is None or findings.empty:
        return out
    sizes = findings.groupby([schema.CONVERSATION_ID, schema.DIMENSION, schema.POLARITY]).size()
    if sizes.empty:
        return out
    # One array write instead of one .loc write per group (that cost ~40% of a risk prediction).
    # Groups are visited in groupby order and a later group mapping to the same cell overwrote
    # an earlier one (two non-"+" polarities both count as "neg"): keep the last.
    cols = [f"f_{d}_{'pos' if p == '+' else 'neg'}" for d, p in zip(
        sizes.index.get_level_values(1).tolist(), sizes.index.get_level_values(2).tolist(), strict=True)]
    col_pos = np.fromiter(map({c: j for j, c in enumerate(names)}.get, cols, repeat(-1)), dtype=np.int64,
                          count=len(cols))
    if out.index.is_unique:
        row_pos = out.index.get_indexer(sizes.index.get_level_values(0))
    else:  # .loc on a repeated label sets every row with it: keep the per-group loop
        for (cid, _, _), n, col in zip(sizes.index, sizes.tolist(), cols, strict=True):
            if cid in out.index and col in out.columns:
                out.loc[cid, col] = float(n)
        return out
    ok = (row_pos >= 0) & (col_pos >= 0)
    cells = pd.DataFrame({"r": row_pos[ok], "c": col_pos[ok], "n": sizes.to_numpy(dtype=float)[ok]})
    cells = cells.drop_duplicates(["r", "c"], keep="last")
    values = out.to_numpy(copy=True)
    values[cells["r"].to_numpy(), cells["c"].to_numpy()] = cells["n"].to_numpy()
    return pd.DataFrame(values, index=out.index, columns=out.columns)
