"""Mask personal data before text leaves the QA team (merchant e-mails, exported samples).

Masking keeps the text length (each masked character becomes ``*``) so evidence offsets
computed on the original text still point at the same span of the masked text. Phones keep
their first three and last four digits (138****5678) so a supervisor can still tell numbers
apart; everything else keeps at most a short tail (order/waybill numbers the last four, QQ
numbers the last two, WeChat/LINE ids the first character; the keyword before an id stays, so
a reviewer still sees that an agent handed out a contact). Addresses keep province/city/district.
Works on Simplified and Traditional text. Prices, dates, sizes and model numbers stay readable.
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
# PDD order numbers carry a yymmdd prefix: 231201-123456789012345. The prefix is masked too.
DATED_ORDER_RE = re.compile(_D + r"\d{6}-\d{10,}" + _ND)
CN_MOBILE_RE = re.compile(_D + r"(?:\+?86[\s\-]?)?1[3-9]\d[\s\-]?\d{4}[\s\-]?\d{4}" + _ND)
TW_MOBILE_RE = re.compile(_D + r"(?:\+?886[\s\-]?9|09)\d{2}[\s\-]?\d{3}[\s\-]?\d{3}" + _ND)
LANDLINE_RE = re.compile(
    _D + r"(?:\(0\d{1,3}\)\s?\d{3,4}[\s\-]?\d{4}|0\d{1,3}[\s\-]\d{3,4}[\s\-]?\d{4}|0\d{2,3}\d{7,8})" + _ND)
# Contact ids only count after a keyword (a bare "lily8888" is not PII we can recognise).
_SAYS = r"\s*(?:号|號|[iI][dD])?\s*(?:是|为|為|[:：])?\s*"
QQ_RE = re.compile(r"(?:(?<![A-Za-z])[Qq]{2}(?![A-Za-z])|扣扣|企鹅|企鵝)(?:群)?" + _SAYS
                   + r"(?P<id>[1-9]\d{4,11})" + _ND)
CHAT_ID_RE = re.compile(
    r"(?:(?<![A-Za-z])(?:[vVwW][xX]|[wW]e[cC]hat|[wW]eixin|LINE|[Ll]ine)(?![A-Za-z])|[vVwW]信|微信|威信|薇信|微訊|賴)"
    + _SAYS + r"(?P<id>[A-Za-z][-_A-Za-z\d]{5,19}|\d{6,12})" + _ND)
# Order / waybill numbers: 10+ digits, optionally mixed with letters (SF1234567890123,
# 250101ABCD1234); a size such as 1800x2000x1200 is not one.
ORDER_RE = re.compile(_D + r"(?=(?:[A-Za-z]*\d){10})(?![A-Za-z\d]*\d[xX×]\d)[A-Za-z\d]{10,}" + _ND)
_CNUM = "零〇一二三四五六七八九十百千两兩"
_NUM = rf"(?:\d+|[{_CNUM}]+)"
_REGION = (rf"(?:[{_HAN}]{{2,7}}?(?:省|自治区|自治區|特别行政区))?"
           rf"(?:[{_HAN}]{{2,7}}?(?:市|自治州|州|盟|县|縣))?"
           rf"(?:[{_HAN}]{{1,7}}?(?:区|區|县|縣|市|镇|鎮|乡|鄉|街道))?")
# 里/段/路 are also ordinary words (这里, 这段时间, 路上); those uses are not street names.
_PLACE = (r"(?:(?<![一线線网網走道出思马馬公])路(?!上)|街|大道|巷|弄|胡同|(?<![这這那哪阶階时時手片路一])段"
          r"|村|(?<![这這那哪公千万萬])里|小区|社区|社區|大厦|大廈|公寓|花园|花園|新村|园区|園區|广场|廣場)")
_UNIT = r"(?:号|號|栋|棟|幢|楼|樓|室|单元|單元|层|層|弄|巷|座|f|F)"
# The house number: digits with any unit, or Chinese numerals with 号 only (八十八号); 一栋/一楼
# after a Chinese numeral is too often ordinary speech (只有这一栋楼). Later units may use either.
_FIRST = rf"(?:\d+\s*{_UNIT}|(?<![这這那哪每])[{_CNUM}]+\s*[号號])"
ADDRESS_RE = re.compile(
    rf"(?P<region>{_REGION})"
    rf"(?P<detail>[{_HAN}\dA-Za-z]{{1,15}}?{_PLACE}[{_HAN}\dA-Za-z\-#]{{0,12}}?{_FIRST}"
    rf"(?:\s*[\dA-Za-z\-#{_HAN}]{{0,10}}?(?:{_NUM}|[A-Za-z])\s*{_UNIT})*(?:之{_NUM})?(?:\d+(?!\d))?)"
)


def _mask_alnum(s: str, head: int, tail: int) -> str:
    """``s`` with its letters/digits masked except the first ``head`` and last ``tail`` of them."""
    idx = [i for i, ch in enumerate(s) if ch.isalnum()]
    keep = set(idx[:head]) | set(idx[len(idx) - tail:] if tail else [])
    return "".join(ch if (i in keep or not ch.isalnum()) else "*" for i, ch in enumerate(s))


def _keep(head: int, tail: int, group: int | str = 0) -> Callable[[re.Match[str]], str]:
    """Mask the digits/letters of ``group`` except the first ``head`` and last ``tail`` of them.

    Only the group is masked, so the keyword in front of a contact id (微信, QQ) stays readable.
    """

    def sub(m: re.Match[str]) -> str:
        s = m.group(0)
        a, b = (x - m.start() for x in m.span(group))
        return s[:a] + _mask_alnum(s[a:b], head, tail) + s[b:]

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


# Cheap pre-checks (one character-class scan each) let most chat lines skip the expensive
# patterns: masking only ever removes digits/letters, so a check on the input stays valid.
_DIGIT = re.compile(r"\d")
_AT = re.compile("@")
_CONTACT_HINT = re.compile(r"[vVwWlLQq扣企信賴赖]")
_ADDRESS_HINT = re.compile(r"[路街道巷弄同段村里区區厦廈寓园園场場][^，。,.!?！？；;\n]{0,40}[号號栋棟幢楼樓室元层層座fF巷弄]")

_STEPS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str], re.Pattern[str]], ...] = (
    (EMAIL_RE, _email, _AT),
    (CN_ID_RE, _keep(3, 2), _DIGIT),
    (TW_ID_RE, _keep(2, 2), _DIGIT),
    (DATED_ORDER_RE, _keep(0, 4), _DIGIT),
    (CN_MOBILE_RE, _middle(-8, -4), _DIGIT),
    (TW_MOBILE_RE, _middle(-6, -3), _DIGIT),
    (LANDLINE_RE, _middle(-8, -4), _DIGIT),
    (QQ_RE, _keep(0, 2, "id"), _DIGIT),
    (CHAT_ID_RE, _keep(1, 0, "id"), _CONTACT_HINT),
    (ORDER_RE, _keep(0, 4), _DIGIT),
    (ADDRESS_RE, _address, _ADDRESS_HINT),
)


def mask_pii(text: str) -> str:
    """The text with phones, ID numbers, e-mails, QQ/WeChat/LINE ids, order numbers and addresses masked.

    Same length as the input; JDDC placeholders such as ``[电话x]`` are left as they are.
    """
    if not text:
        return text
    hints: dict[re.Pattern[str], bool] = {}
    for rx, fn, hint in _STEPS:
        present = hints.get(hint)
        if present is None:
            present = hints[hint] = hint.search(text) is not None
        if present:
            text = rx.sub(fn, text)
    return text
