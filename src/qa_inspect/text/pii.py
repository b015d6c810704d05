"""Mask personal data before text leaves the QA team (merchant e-mails, exported samples).

Masking keeps the text length (each masked character becomes ``*``) so evidence offsets
computed on the original text still point at the same span of the masked text. Phones keep
their first three and last four digits (138****5678) so a supervisor can still tell numbers
apart; everything else keeps at most a short tail. Works on Simplified and Traditional text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_HAN = r"\u4e00-\u9fff"
_D = r"(?<![\dA-Za-z])"
_ND = r"(?![\dA-Za-z])"

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
CN_ID_RE = re.compile(_D + r"[1-9]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]" + _ND)
TW_ID_RE = re.compile(r"(?<![A-Za-z\d])[A-Z][12]\d{8}(?!\d)")
CN_MOBILE_RE = re.compile(_D + r"(?:\+?86[\s\-]?)?1[3-9]\d[\s\-]?\d{4}[\s\-]?\d{4}" + _ND)
TW_MOBILE_RE = re.compile(_D + r"(?:\+?886[\s\-]?9|09)\d{2}[\s\-]?\d{3}[\s\-]?\d{3}" + _ND)
LANDLINE_RE = re.compile(
    _D + r"(?:\(0\d{1,3}\)\s?\d{3,4}[\s\-]?\d{4}|0\d{1,3}[\s\-]\d{3,4}[\s\-]?\d{4}|0\d{2,3}\d{7,8})" + _ND)
LONG_DIGITS_RE = re.compile(_D + r"[A-Za-z]{0,3}\d{10,}" + _ND)  # order / waybill numbers
_REGION = (rf"(?:[{_HAN}]{{2,7}}?(?:省|自治区|自治區|特别行政区))?"
           rf"(?:[{_HAN}]{{2,7}}?(?:市|自治州|州|盟|县|縣))?"
           rf"(?:[{_HAN}]{{1,7}}?(?:区|區|县|縣|市|镇|鎮|乡|鄉|街道))?")
_PLACE = r"(?:路|街|大道|巷|弄|胡同|段|村|里|小区|社区|社區|大厦|大廈|公寓|花园|花園|新村|园区|園區|广场|廣場)"
_UNIT = r"(?:号|號|栋|棟|幢|楼|樓|室|单元|單元|层|層|弄|巷|座|f|F)"
ADDRESS_RE = re.compile(
    rf"(?P<region>{_REGION})"
    rf"(?P<detail>[{_HAN}\dA-Za-z]{{1,15}}?{_PLACE}[{_HAN}\dA-Za-z\-#]{{0,12}}?\d+\s*{_UNIT}"
    rf"(?:\s*[\dA-Za-z\-#{_HAN}]{{0,10}}?(?:\d+|[A-Za-z])\s*{_UNIT})*(?:之\d+)?(?:\d+(?!\d))?)"
)


def _keep(head: int, tail: int) -> Callable[[re.Match[str]], str]:
    """Mask the digits/letters of a match except the first ``head`` and last ``tail`` of them."""

    def sub(m: re.Match[str]) -> str:
        s = m.group(0)
        idx = [i for i, ch in enumerate(s) if ch.isalnum()]
        keep = set(idx[:head]) | set(idx[len(idx) - tail:] if tail else [])
        return "".join(ch if (i in keep or not ch.isalnum()) else "*" for i, ch in enumerate(s))

    return sub


def _middle(start: int, stop: int) -> Callable[[re.Match[str]], str]:
    """Mask digits ``start:stop`` counted from the end (138 1234 5678 -> 138 **** 5678)."""

    def sub(m: re.Match[str]) -> str:
        s = m.group(0)
        idx = [i for i, ch in enumerate(s) if ch.isdigit()]
        hide = set(idx[start:stop])
        return "".join("*" if i in hide else ch for i, ch in enumerate(s))

    return sub


def _email(m: re.Match[str]) -> str:
    local, _, domain = m.group(0).partition("@")
    return local[:1] + "*" * (len(local) - 1) + "@" + domain


def _address(m: re.Match[str]) -> str:
    # Keep province/city/district (useful for logistics questions), mask street and number.
    return m.group("region") + "*" * len(m.group("detail"))


_STEPS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (EMAIL_RE, _email),
    (CN_ID_RE, _keep(3, 2)),
    (TW_ID_RE, _keep(2, 2)),
    (CN_MOBILE_RE, _middle(-8, -4)),
    (TW_MOBILE_RE, _middle(-6, -3)),
    (LANDLINE_RE, _middle(-8, -4)),
    (LONG_DIGITS_RE, _keep(0, 4)),
    (ADDRESS_RE, _address),
)


def mask_pii(text: str) -> str:
    """The text with phones, ID numbers, e-mails, order numbers and street addresses masked.

    Same length as the input; JDDC placeholders such as ``[电话x]`` are left as they are.
    """
    if not text:
        return text
    for rx, fn in _STEPS:
        text = rx.sub(fn, text)
    return text
