"""FAQ matching: which shop FAQ (if any) a buyer question asks, and does the answer cover it.

TF-IDF over jieba words plus character n-grams (robust to segmentation differences between
Simplified and Traditional, and to short chat questions); cosine similarity, averaged.
Key facts are matched after normalisation, numbers and durations numerically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from qa_inspect.knowledge.kb import FaqEntry
from qa_inspect.knowledge.numbers import durations, numbers
from qa_inspect.text.normalize import normalize_text
from qa_inspect.text.tokenize import Tokenizer

FAQ_THRESHOLD = 0.55  # averaged word/char cosine; below it a question is "not an FAQ"
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
_FILLER = frozenset("的 了 吗 嗎 呢 啊 吧 么 呀 哦 亲 你好 您好 在 在吗 请问 想 问 一下 这个 那个 我 你 您".split())


def _words(tokens: Sequence[str]) -> list[str]:
    """Word features: content tokens only (module-level so the vectorizer pickles)."""
    return [t for t in tokens if t.strip() and t not in _FILLER and any(c.isalnum() for c in t)]


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
        return cls(entries, tok, word_vec, char_vec, word_m, char_m, pattern)

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
        cslot: dict[str, int] = {}
        cidx: list[int] = []
        for n, b, t in zip(norms, blanked, tokens or [None] * len(norms), strict=True):
            key: tuple = (0, tuple(t)) if t is not None and b == n else (1, b)
            k = wslot.get(key)
            if k is None:
                k = wslot[key] = len(wdocs)
                wdocs.append(list(t) if key[0] == 0 else self.tokenizer.lcut(b))  # type: ignore[arg-type]
            widx.append(k)
            k = cslot.get(b)
            if k is None:
                k = cslot[b] = len(cslot)
            cidx.append(k)
        w = self.word_vec.transform(wdocs)
        c = self.char_vec.transform([_chars(b) for b in cslot])
        sim = 0.5 * (w @ self.word_m.T).toarray()[widx] + 0.5 * (c @ self.char_m.T).toarray()[cidx]
        best = np.argmax(sim, axis=1)
        scores = sim[np.arange(len(norms)), best]
        out: list[tuple[int, float] | None] = []
        for i, s, n in zip(best.tolist(), scores.tolist(), blanked, strict=True):
            out.append((i, s) if s >= self.threshold and len(_squash(n)) >= 2 else None)
        return out


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
