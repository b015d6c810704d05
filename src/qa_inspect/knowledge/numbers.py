"""Numbers and durations as agents write them: 299, 2.5, 两百九十九, 一百二, 十二, 半年, 两天.

Agents rarely copy the catalog's figures verbatim, so every comparison goes through these
parsers: a claim of 两天内发货 must equal a KB value of 48 hours, 一年 must equal 12 months.
"""

from __future__ import annotations

import re

_DIGITS = {"零": 0, "〇": 0, "一": 1, "壹": 1, "二": 2, "贰": 2, "两": 2, "俩": 2, "三": 3, "叁": 3,
           "四": 4, "肆": 4, "五": 5, "伍": 5, "六": 6, "陆": 6, "七": 7, "柒": 7, "八": 8, "捌": 8,
           "九": 9, "玖": 9}
_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_BIG = {"万": 10_000, "萬": 10_000}

CN_NUM_CHARS = "".join(_DIGITS) + "".join(_UNITS) + "".join(_BIG)
# A number as written: Arabic (with thousands separators / decimals) or a run of Chinese numerals.
# "半" is handled by the duration parser, not here.
NUMBER_RE = rf"(?:\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?|[{CN_NUM_CHARS}]+)"


def parse_cn_int(s: str) -> int | None:
    """Parse Chinese numerals: 十二, 两百九十九, 一百二 (=120), 三千五 (=3500), 二九九 (=299)."""
    if not s:
        return None
    if any(c not in _DIGITS and c not in _UNITS and c not in _BIG for c in s):
        return None
    # Digit-by-digit style (二九九, 一五零): no unit characters at all.
    if not any(c in _UNITS or c in _BIG for c in s):
        if len(s) == 1:
            return _DIGITS[s]
        return int("".join(str(_DIGITS[c]) for c in s))
    total = 0
    section = 0
    digit: int | None = None
    last_unit = 1
    for c in s:
        if c in _DIGITS:
            digit = _DIGITS[c]
        elif c in _UNITS:
            unit = _UNITS[c]
            section += (digit if digit is not None else 1) * unit
            digit = None
            last_unit = unit
        else:  # 万
            section += digit or 0
            total += section * _BIG[c]
            section, digit, last_unit = 0, None, _BIG[c]
    if digit is not None:
        # 一百二 = 120, 三千五 = 3500: a trailing digit after a unit is one unit lower.
        # 一百零二 keeps 2 because 零 reset the implied unit.
        if last_unit >= 100 and s[-2] not in "零〇":
            section += digit * (last_unit // 10)
        else:
            section += digit
    return total + section


def parse_number(s: str) -> float | None:
    """An Arabic or Chinese number as float; None when it is not a number."""
    s = s.strip().replace(",", "")
    if not s:
        return None
    try:
        return float(s)
    except ValueError:
        pass
    v = parse_cn_int(s)
    return float(v) if v is not None else None


_DUR_UNIT_HOURS = {"小时": 1.0, "个小时": 1.0, "钟头": 1.0, "h": 1.0, "天": 24.0, "日": 24.0,
                   "个工作日": 24.0, "工作日": 24.0, "周": 168.0, "个星期": 168.0, "星期": 168.0}
_DUR_UNIT_MONTHS = {"个月": 1.0, "月": 1.0, "年": 12.0}

DURATION_RE = re.compile(
    rf"(?P<num>{NUMBER_RE}|半)(?P<half>个半|半)?\s*(?P<unit>个小时|小时|钟头|个工作日|工作日|个星期|星期|周|个月|天|日|年|月|h\b)"
)


def duration_value(num: str, unit: str, half: str | None = None) -> tuple[str, float] | None:
    """(``'hours'`` | ``'months'``, value) for a number and unit; 半年 = 6 months, 两天 = 48 hours."""
    if num == "半":
        n: float | None = 0.5
    else:
        n = parse_number(num)
    if n is None:
        return None
    if half:
        n += 0.5
    unit = unit.lower()
    if unit in _DUR_UNIT_HOURS:
        return "hours", n * _DUR_UNIT_HOURS[unit]
    if unit in _DUR_UNIT_MONTHS:
        return "months", n * _DUR_UNIT_MONTHS[unit]
    return None


def durations(text: str) -> list[tuple[str, float, int, int]]:
    """All durations in ``text``: (kind, value, start, end)."""
    out = []
    for m in DURATION_RE.finditer(text):
        v = duration_value(m.group("num"), m.group("unit"), m.group("half"))
        if v is not None:
            out.append((v[0], v[1], m.start(), m.end()))
    return out


def numbers(text: str) -> list[tuple[float, int, int]]:
    """All numbers in ``text``: (value, start, end)."""
    out = []
    for m in re.finditer(NUMBER_RE, text):
        v = parse_number(m.group(0))
        if v is not None:
            out.append((v, m.start(), m.end()))
    return out


def fmt_num(v: float) -> str:
    """299.0 -> '299', 2.5 -> '2.5' for explanations."""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
