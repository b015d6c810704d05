"""FAQ matching: which shop FAQ (if any) a buyer question asks, and does the answer cover it.

TF-IDF over jieba words plus character n-grams (robust to segmentation differences between
Simplified and Traditional, and to short chat questions); cosine similarity, averaged.
Key facts are matched after normalisation, numbers and durations numerically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import add

import ahocorasick
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from qa_inspect.knowledge.kb import FaqEntry
from qa_inspect.knowledge.numbers import durations, numbers
from qa_inspect.text.normalize import normalize_text
from qa_inspect.text.tfidf import feature_cells, weigh_cells
from qa_inspect.text.tokenize import Tokenizer

FAQ_THRESHOLD = 0.55  # averaged word/char cosine; below it a question is "not an FAQ"
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
_FILLER = frozenset("的 了 吗 嗎 呢 啊 吧 么 呀 哦 亲 你好 您好 在 在吗 请问 想 问 一下 这个 那个 我 你 您".split())


# One character c with c.isalnum() (regex \w is exactly isalnum() or "_"); such a token is never blank.
_ALNUM = re.compile(r"[^\W_]")


def _words(tokens: Sequence[str]) -> list[str]:
    """Word features: content tokens only (module-level so the vectorizer pickles).

    Same as ``[t for t in tokens if t.strip() and t not in _FILLER and any(c.isalnum() for c in t)]``
    (tests compare), with the character test done by the regex engine.
    """
    search = _ALNUM.search
    return [t for t in tokens if t not in _FILLER and search(t)]


def _squash(norm: str) -> str:
    return _PUNCT.sub("", norm)


# Same intent, different words (and Taiwan usage): folded before matching, not for display.
_SYNONYMS = {"出货": "发货", "寄出": "发货", "发出": "发货", "免运费": "包邮", "免运": "包邮", "免邮": "包邮",
             "保固": "保修", "质保": "保修", "鉴赏期": "退换", "多少钱": "价格", "啥价": "价格", "价钱": "价格",
             "材料": "材质", "面料": "材质", "用料": "材质", "活动": "优惠", "特价": "优惠", "折扣": "优惠",
             "退货": "退换", "退款": "退换", "无理由": "退换", "什么时候": "多久", "多长时间": "多久",
             "几天": "多久"}
_SYN_RE = re.compile("|".join(sorted(_SYNONYMS, key=len, reverse=True)))
_FUNCTION_CHARS = re.compile(r"[的了吗呢么吧啊呀哦嘛喔耶这那个我你您亲请问想]")


def _blank(norm: str, names: re.Pattern[str] | None) -> str:
    """Product names out, synonyms folded: what is matched is the intent of the question."""
    out = names.sub(" ", norm) if names is not None else norm
    return _SYN_RE.sub(lambda m: _SYNONYMS[m.group(0)], out)


def _chars(norm: str) -> str:
    return _FUNCTION_CHARS.sub("", _squash(norm))


@dataclass
class FaqIndex:
    entries: list[FaqEntry]
    tokenizer: Tokenizer
    word_vec: TfidfVectorizer
    char_vec: TfidfVectorizer
    word_m: object
    char_m: object
    names: re.Pattern[str] | None = None
    threshold: float = FAQ_THRESHOLD
    vocab: ahocorasick.Automaton | None = None  # the word features: a text containing none has none


    @classmethod
    def build(cls, entries: list[FaqEntry], extra_words: Iterable[str] = (),
              product_names: Iterable[str] = ()) -> FaqIndex:
        """``product_names`` are blanked out before matching: the FAQ is matched on what is asked
        ("有多高", "什么时候有货"), not on which product is named, which would otherwise make any
        message naming 乳胶枕 look like the FAQ "乳胶枕有多高"."""
        tok = Tokenizer([(w, None, None) for w in extra_words])
        names = sorted({n for n in (normalize_text(x).strip() for x in product_names) if len(n) >= 2},
                       key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(n) for n in names)) if names else None
        norms = [_blank(normalize_text(e.question), pattern) for e in entries]
        word_vec = TfidfVectorizer(analyzer=_words, sublinear_tf=True)
        char_vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        word_m = word_vec.fit_transform([tok.lcut(n) for n in norms])
        char_m = char_vec.fit_transform([_chars(n) for n in norms])
        vocab = ahocorasick.Automaton()
        for w in word_vec.vocabulary_:
            vocab.add_word(w, 0)
        vocab.make_automaton()
        return cls(entries, tok, word_vec, char_vec, word_m, char_m, pattern, vocab=vocab)

    def _may_have_words(self, text: str) -> bool:
        """Could jieba's tokens of ``text`` include a word feature? Tokens are substrings of the
        text, so not when no feature occurs in it (then tokenizing is skipped: same zero vector)."""
        return self.vocab is None or next(self.vocab.iter(text), None) is not None

    def match(self, norm: str, tokens: Sequence[str] | None = None) -> tuple[int, float] | None:
        """(entry index, similarity) of the best FAQ for a normalised question, or None."""
        return self.match_many([norm], [tokens])[0]

    def match_many(self, norms: Sequence[str],
                   tokens: Sequence[Sequence[str] | None] | None = None) -> list[tuple[int, float] | None]:
        """Batch version of :meth:`match` (one sparse product for a whole partition: fast).

        ``tokens`` (the partition's jieba tokens) are used only when no product name was blanked.
        """
        if not norms:
            return []
        blanked = [_blank(n, self.names) for n in norms]
        # Features are computed once per distinct input: word features per token list (the given
        # tokens when nothing was blanked, else jieba on the blanked text), char features per
        # blanked text. Many questions differ only in the product named, blanked away. A row's
        # similarities depend on that row alone, so this gives the same numbers.
        wslot: dict[tuple, int] = {}
        wdocs: list[list[str]] = []
        widx: list[int] = []
        for n, b, t in zip(norms, blanked, tokens or [None] * len(norms), strict=True):
            key: tuple = (0, tuple(t)) if t is not None and b == n else (1, b)
            k = wslot.get(key)
            if k is None:
                k = wslot[key] = len(wdocs)
                if key[0] == 0:
                    wdocs.append(list(t))  # type: ignore[arg-type]
                else:
                    wdocs.append(self.tokenizer.lcut(b) if self._may_have_words(b) else [])
            widx.append(k)
        wsim = (transform(self.word_vec, wdocs) @ self.word_m.T).toarray()[widx]
        # The similarity is the mean of two cosines, each at most 1: a row whose word cosines are
        # all below 2 * threshold - 1 cannot reach the threshold whatever its characters (most
        # chat lines share no word with any FAQ question), so its char features are not computed.
        floor = 2 * self.threshold - 1 - 1e-9
        live = np.flatnonzero(wsim.max(axis=1) >= floor) if floor > 0 else np.arange(len(norms))
        cslot: dict[str, int] = {}
        cidx: list[int] = []
        for r in live.tolist():
            b = blanked[r]
            k = cslot.get(b)
            if k is None:
                k = cslot[b] = len(cslot)
            cidx.append(k)
        out: list[tuple[int, float] | None] = [None] * len(norms)
        if not len(live):
            return out
        c = transform(self.char_vec, [_chars(b) for b in cslot])
        sim = 0.5 * wsim[live] + 0.5 * (c @ self.char_m.T).toarray()[cidx]
        best = np.argmax(sim, axis=1)
        scores = sim[np.arange(len(live)), best]
        for r, i, s in zip(live.tolist(), best.tolist(), scores.tolist(), strict=True):
            if s >= self.threshold and len(_squash(blanked[r])) >= 2:
                out[r] = (i, s)
        return out


_WHITE_SPACES = re.compile(r"\s\s+")  # as scikit-learn's char analyzer folds white space


def _char_grams(doc: str) -> list[str]:
    """The character 1-3-grams scikit-learn's ``analyzer="char", ngram_range=(1, 3)`` yields for
    ``doc`` (lower-cased, white-space runs folded), in another order (order does not count)."""
    d = _WHITE_SPACES.sub(" ", doc.lower())
    pairs = list(map(add, d, d[1:]))
    return [*d, *pairs, *map(add, pairs, d[2:])]


def _features(vec: TfidfVectorizer, docs: Sequence) -> Iterable[list] | None:
    """Each document's features as ``vec``'s analyzer yields them, or None when ``vec`` is not
    one of the two configurations this module fits (then its own ``transform`` is used)."""
    if vec.analyzer is _words and vec.input == "content":
        return map(_words, docs)
    if vec.analyzer == "char" and vec.ngram_range == (1, 3) and vec.lowercase and vec.preprocessor is None \
            and vec.strip_accents is None and vec.input == "content":
        return map(_char_grams, docs)
    return None


def transform(vec: TfidfVectorizer, docs: Sequence) -> object:
    """``vec.transform(docs)`` with the counting done in bulk (numpy) instead of one dict update
    per feature: the count matrix is the one scikit-learn builds (same counts, sorted indices,
    float64), then weighted by the vectorizer's own fitted TF-IDF step, so the numbers are
    identical (tests compare with ``vec.transform``)."""
    feats = _features(vec, docs)
    if feats is None or getattr(vec, "_tfidf", None) is None or vec.binary or vec.dtype is not np.float64:
        return vec.transform(docs)
    rows, cols = feature_cells(feats, vec.vocabulary_)
    return weigh_cells(vec, rows, cols, len(docs))


_UNIT_NOISE = re.compile(r"nt\$|\$|¥|￥|元|块|个|%")


def fact_covered(fact: str, answer_norm: str) -> bool:
    """Is a key fact stated in the answer? Text after normalisation; numbers/durations by value."""
    f = normalize_text(fact)
    fs, ans = _squash(f), _squash(answer_norm)
    if not fs:
        return True
    if fs in ans:
        return True
    fd = durations(f)
    if fd:
        ad = {(k, round(v, 2)) for k, v, _, _ in durations(answer_norm)}
        if all((k, round(v, 2)) in ad for k, v, _, _ in fd):
            rest = _squash(_UNIT_NOISE.sub("", _strip_spans(f, [(s, e) for _, _, s, e in fd])))
            return _overlap(rest, ans) >= 0.5
        return False
    fn = numbers_only_arabic(f)
    if fn:
        an = {round(v, 2) for v, _, _ in numbers(answer_norm)}
        if all(round(v, 2) in an for v in fn):
            rest = _squash(_UNIT_NOISE.sub("", re.sub(r"\d+(?:\.\d+)?", "", f)))
            return _overlap(rest, ans) >= 0.5
        return False
    return _overlap(fs, ans) >= 0.6


def covered_facts(facts: Sequence[str], answer_norm: str, memo: dict | None = None) -> list[str]:
    """``[f for f in facts if fact_covered(f, answer_norm)]``, each fact parsed once per ``memo``.

    Same decisions as :func:`fact_covered` (tests compare the two); the fact-side work
    (normalising, durations, numbers) is kept in ``memo`` (a dict the caller owns) and the
    answer-side work is done at most once per call.
    """
    memo = {} if memo is None else memo
    ans_parts: list = []  # [squashed answer, durations set, numbers set], filled lazily

    def ans(k: int) -> object:
        if not ans_parts:
            ans_parts.extend([_squash(answer_norm), None, None])
        if k == 1 and ans_parts[1] is None:
            ans_parts[1] = {(kd, round(v, 2)) for kd, v, _, _ in durations(answer_norm)}
        if k == 2 and ans_parts[2] is None:
            ans_parts[2] = {round(v, 2) for v, _, _ in numbers(answer_norm)}
        return ans_parts[k]

    out = []
    for fact in facts:
        fp = memo.get(fact)
        if fp is None:
            fp = memo[fact] = _fact_parts(fact)
        fs, fd, fn, rest = fp
        a = ans(0)
        if not fs or fs in a:  # type: ignore[operator]
            ok = True
        elif fd:
            ok = all(d in ans(1) for d in fd) and _overlap(rest, a) >= 0.5  # type: ignore[arg-type,operator]
        elif fn:
            ok = all(v in ans(2) for v in fn) and _overlap(rest, a) >= 0.5  # type: ignore[arg-type,operator]
        else:
            ok = _overlap(fs, a) >= 0.6  # type: ignore[arg-type]
        if ok:
            out.append(fact)
    return out


def _fact_parts(fact: str) -> tuple[str, list[tuple[str, float]], list[float], str]:
    """What :func:`fact_covered` derives from the fact alone: squashed text, durations, numbers, rest."""
    f = normalize_text(fact)
    fs = _squash(f)
    fd = durations(f)
    if fd:
        rest = _squash(_UNIT_NOISE.sub("", _strip_spans(f, [(s, e) for _, _, s, e in fd])))
        return fs, [(k, round(v, 2)) for k, v, _, _ in fd], [], rest
    fn = numbers_only_arabic(f)
    if fn:
        rest = _squash(_UNIT_NOISE.sub("", re.sub(r"\d+(?:\.\d+)?", "", f)))
        return fs, [], [round(v, 2) for v in fn], rest
    return fs, [], [], ""


def numbers_only_arabic(s: str) -> list[float]:
    return [float(m) for m in re.findall(r"\d+(?:\.\d+)?", s)]


def _strip_spans(s: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for a, b in sorted(spans):
        out.append(s[pos:a])
        pos = b
    out.append(s[pos:])
    return "".join(out)


def _overlap(fact: str, ans: str) -> float:
    """Share of the fact's characters bigrams (or chars, when short) present in the answer."""
    if not fact:
        return 1.0
    if len(fact) <= 2:
        return 1.0 if fact in ans else sum(c in ans for c in fact) / len(fact) * 0.5
    grams = {fact[i:i + 2] for i in range(len(fact) - 1)}
    return sum(g in ans for g in grams) / len(grams)
