"""Tokenise normalised text with jieba (reference) or rjieba (fast), one user dictionary.

Each ``Tokenizer`` owns its own engine instance (never jieba's global one), loaded lazily on
first use so that building one is cheap and pickling one (process pools, Dask) ships only its
configuration. Sticker codes, JDDC placeholders and emoji are cut out before segmentation and
kept as single tokens. Tokens always concatenate back to the input text, so a token boundary
is a character offset into ``norm_text`` (and therefore into ``text``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from qa_inspect import schema
from qa_inspect.errors import BugError, ConfigError, UsageError
from qa_inspect.text.normalize import PROTECTED_RE

Backend = Literal["jieba", "rjieba"]
DICT_DIR = "dict"
STOPWORDS_FILE = "stopwords.txt"


def rjieba_available() -> bool:
    return importlib.util.find_spec("rjieba") is not None


def read_dict_file(path: Path) -> list[tuple[str, int | None, str | None]]:
    """Parse a jieba user dictionary (``word [freq] [tag]`` per line, ``#`` comments)."""
    entries: list[tuple[str, int | None, str | None]] = []
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason})", file=str(path)) from None
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        word, freq, tag = parts[0], None, None
        if len(parts) >= 2:
            if parts[1].isdigit():
                freq = int(parts[1])
                tag = parts[2] if len(parts) >= 3 else None
            else:
                tag = parts[1]
        if len(parts) > 3 or (len(parts) == 3 and freq is None):
            raise ConfigError("expected 'word [freq] [tag]'", file=str(path), key_path=f"line {n}")
        entries.append((word, freq, tag))
    return entries


def read_stopwords(path: Path) -> frozenset[str]:
    if not Path(path).exists():
        return frozenset()
    return frozenset(w for w, _, _ in read_dict_file(path))


def _rule_phrases(rules_dir: Path) -> list[str]:
    """Phrases of the rule sets in ``rules_dir``; files with errors contribute what parses
    (``load_ruleset`` / ``rules check`` report the errors themselves)."""
    if not rules_dir.is_dir():
        return []
    from qa_inspect.ruleengine.engine import ruleset_words  # late: ruleengine imports this module
    from qa_inspect.ruleengine.ruleset import collect_ruleset

    try:
        ruleset, _errors = collect_ruleset(rules_dir)
    except ConfigError:
        return []
    return ruleset_words(ruleset)


class Tokenizer:
    """A configured segmenter: backend + user words + stopwords. Pure: same input, same tokens."""

    def __init__(self, words: Iterable[tuple[str, int | None, str | None]] = (),
                 stopwords: Iterable[str] = (), backend: Backend | None = None) -> None:
        from qa_inspect.text.normalize import normalize_text

        if backend is None:
            backend = "rjieba" if rjieba_available() else "jieba"
        if backend not in ("jieba", "rjieba"):
            raise UsageError(f"unknown tokenizer backend '{backend}'; known: jieba, rjieba")
        if backend == "rjieba" and not rjieba_available():
            raise UsageError("tokenizer backend 'rjieba' requested but rjieba is not installed "
                             "(pip install 'qa-inspect[fast]')")
        self.backend: Backend = backend
        # Dictionary words are normalised like messages so Traditional entries still match.
        seen: dict[str, tuple[str, int | None, str | None]] = {}
        for w, f, t in words:
            nw = normalize_text(w)
            if nw and not PROTECTED_RE.fullmatch(nw):
                seen[nw] = (nw, f, t)
        self.words: tuple[tuple[str, int | None, str | None], ...] = tuple(seen.values())
        self.stopwords: frozenset[str] = frozenset(normalize_text(s) for s in stopwords)
        self._engine: Any = None

    @classmethod
    def from_rules(cls, rules_dir: Path | str, extra_words: Iterable[str] = (),
                   backend: Backend | None = None, rule_phrases: bool = True) -> Tokenizer:
        """User dictionary = ``<rules>/dict/*.txt`` (except stopwords.txt) + the rule sets'
        phrases + ``extra_words`` (e.g. knowledge-base product names).

        Rule phrases match only on token boundaries, so they belong in the dictionary; taking
        them here keeps every stage's tokens the same whoever builds the tokenizer.
        """
        d = Path(rules_dir) / DICT_DIR
        words: list[tuple[str, int | None, str | None]] = []
        if rule_phrases:
            words.extend((w, None, None) for w in _rule_phrases(Path(rules_dir)))
        stop: frozenset[str] = frozenset()
        if d.is_dir():
            for f in sorted(d.glob("*.txt")):
                if f.name == STOPWORDS_FILE:
                    stop = read_stopwords(f)
                else:
                    words.extend(read_dict_file(f))
        words.extend((w.strip(), None, None) for w in extra_words if w and w.strip())
        return cls(words, stop, backend)

    # -- engine (lazy, per instance) ---------------------------------------------------
    def _load(self) -> Any:
        if self._engine is not None:
            return self._engine
        if self.backend == "jieba":
            import jieba

            jieba.setLogLevel(logging.WARNING)
            eng = jieba.Tokenizer()
            eng.initialize()
            for w, f, t in self.words:
                eng.add_word(w, f, t)
        else:
            import rjieba

            eng = rjieba.Jieba()
            for w, f, t in self.words:
                eng.add_word(w, f, t)
        self._engine = eng
        return eng

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_engine"] = None  # ship configuration, rebuild the engine where it runs
        return state

    def _cut_plain(self, text: str) -> list[str]:
        if not text:
            return []
        eng = self._load()
        toks = list(eng.lcut(text) if self.backend == "jieba" else eng.cut(text))
        if "".join(toks) != text:  # never lose characters: fall back to single characters
            return list(text)
        return toks

    def lcut(self, text: str) -> list[str]:
        """Tokens of one (normalised) text; protected spans are single tokens."""
        out: list[str] = []
        pos = 0
        for m in PROTECTED_RE.finditer(text):
            out.extend(self._cut_plain(text[pos:m.start()]))
            out.append(m.group(0))
            pos = m.end()
        out.extend(self._cut_plain(text[pos:]))
        return out

    def content_tokens(self, tokens: Sequence[str]) -> list[str]:
        """Tokens without whitespace, punctuation-only tokens and stopwords (for models)."""
        return [t for t in tokens if t.strip() and t not in self.stopwords
                and any(ch.isalnum() for ch in t)]


def tokenize(messages: pd.DataFrame, tokenizer: Tokenizer) -> pd.DataFrame:
    """Add ``tokens`` (schema.TOKENS, list[str] per row) over ``norm_text``.

    Input: messages with ``norm_text`` (text.normalize). Output: same rows plus ``tokens``
    whose concatenation equals ``norm_text``. Each distinct text is segmented once.
    """
    schema.require_columns(messages, [schema.NORM_TEXT], "tokenize")
    out = messages.copy()
    norm = out[schema.NORM_TEXT].astype("object").fillna("")
    cache = {t: tokenizer.lcut(t) for t in pd.unique(norm)}
    toks = [list(cache[t]) for t in norm]
    for t, tk in zip(norm[:1], toks[:1], strict=False):
        if "".join(tk) != t:
            raise BugError("tokens do not concatenate to norm_text")
    out[schema.TOKENS] = pd.Series(toks, index=out.index, dtype="object")
    return out


def token_boundaries(tokens: Sequence[str]) -> set[int]:
    """Character offsets where a token starts or ends (0 and len(text) included)."""
    pos = 0
    bounds = {0}
    for t in tokens:
        pos += len(t)
        bounds.add(pos)
    return bounds
