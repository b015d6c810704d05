"""Normalise message text for analysis while keeping offsets valid for the original text.

``text`` stays untouched for display and evidence; ``norm_text`` is what rules and models
read: Simplified Chinese (OpenCC t2s), full-width ASCII folded to half-width, ASCII letters
lower-cased. Every step is char-for-char so that an offset into ``norm_text`` is the same
offset into ``text``; when OpenCC would change the length (a rare phrase conversion) we fall
back to converting character by character, which keeps the length at the cost of that one
phrase conversion.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import opencc
import pandas as pd

from qa_inspect import schema

# Sticker codes ([微笑], [表情]), JDDC placeholders ([订单x], [数字x], [姓名x], [地址x], [金额x])
# and emoji sequences (with skin tones, variation selectors and ZWJ joins) are kept whole.
PROTECTED_RE = re.compile(
    r"\[[^\[\]\s]{1,10}\]"
    r"|(?:[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]"
    r"[\U0001F3FB-\U0001F3FF\uFE0F]*"
    r"(?:\u200D[\U0001F000-\U0001FAFF\u2600-\u27BF][\U0001F3FB-\U0001F3FF\uFE0F]*)*)"
)


def _build_fold_table() -> dict[int, str]:
    """One-character compatibility folds (full-width ASCII, ideographic space, ①→1...).

    Only folds that keep the length at one character are used, so offsets stay valid.
    Chinese punctuation without an ASCII twin (。、「」《》…) is left alone; full-width
    ！？，：；（） become their ASCII forms so that one pattern (e.g. ``?``) matches both.
    """
    table: dict[int, str] = {0x3000: " "}
    for cp in range(0x80, 0x10000):
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        folded = unicodedata.normalize("NFKC", ch)
        if folded != ch and len(folded) == 1 and folded.isprintable():
            table[cp] = folded
    for cp in range(ord("A"), ord("Z") + 1):
        table[cp] = chr(cp + 32)
    # NFKC lower-cases nothing; full-width capitals became ASCII capitals above -> lower them too.
    for cp, v in list(table.items()):
        if "A" <= v <= "Z":
            table[cp] = v.lower()
    return table


_FOLD = _build_fold_table()  # constant after import


@lru_cache(maxsize=4)
def _converter(config: str) -> opencc.OpenCC:
    # A converter is stateless and pure; caching it never changes a result.
    return opencc.OpenCC(config)


def to_simplified(text: str) -> str:
    """Traditional → Simplified with OpenCC t2s, same length as the input.

    OpenCC t2s is almost always char-for-char; when it is not, convert each character on
    its own (keeps length; loses only the multi-character phrase mapping).
    """
    if not text:
        return text
    conv = _converter("t2s")
    out = conv.convert(text)
    if len(out) == len(text):
        return out
    chars = []
    for ch in text:
        c = conv.convert(ch)
        chars.append(c if len(c) == 1 else ch)
    return "".join(chars)


def fold_width(text: str) -> str:
    """Full-width → half-width and ASCII lower-case; length-preserving."""
    return text.translate(_FOLD)


def normalize_text(text: str | None) -> str:
    """The analysis form of one message: folded width, lower-case ASCII, Simplified."""
    if text is None or (not isinstance(text, str) and pd.isna(text)):
        return ""
    return to_simplified(fold_width(str(text)))


def normalize(messages: pd.DataFrame) -> pd.DataFrame:
    """Add ``norm_text`` (schema.NORM_TEXT) to a messages frame.

    Input: schema.MESSAGE_COLUMNS (needs ``text``). Output: the same rows plus ``norm_text``
    (string; "" for a missing text). Unique texts are converted once: chat logs repeat a lot.
    """
    schema.require_columns(messages, [schema.TEXT], "normalize")
    out = messages.copy()
    texts = out[schema.TEXT].astype("object")
    uniq = pd.unique(texts.fillna(""))
    mapping = {t: normalize_text(t) for t in uniq}
    out[schema.NORM_TEXT] = pd.Series(
        [mapping[t] for t in texts.fillna("")], index=out.index, dtype="string"
    )
    return out
