"""Chinese numerals and durations: the parsers every claim comparison goes through."""

from __future__ import annotations

import pytest

from qa_inspect.knowledge.numbers import duration_value, durations, parse_number


@pytest.mark.parametrize(
    ("text", "value"),
    [("299", 299), ("2.5", 2.5), ("1,299", 1299), ("十", 10), ("十二", 12), ("二十", 20),
     ("两百九十九", 299), ("一百二", 120), ("一百零二", 102), ("三千五", 3500), ("二九九", 299),
     ("一万二", 12000), ("九十九", 99)],
)
def test_parse_number(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "abc", "多少", "两百块"])
def test_parse_number_rejects_non_numbers(text: str) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("num", "unit", "half", "expected"),
    [("一", "年", None, ("months", 12)), ("半", "年", None, ("months", 6)),
     ("两", "天", None, ("hours", 48)), ("48", "小时", None, ("hours", 48)),
     ("一", "个月", "个半", ("months", 1.5)), ("3", "个工作日", None, ("hours", 72))],
)
def test_duration_value(num: str, unit: str, half: str | None, expected: tuple[str, float]) -> None:
    assert duration_value(num, unit, half) == expected


def test_durations_in_text_with_offsets() -> None:
    text = "两天内发货，保修一年"
    found = durations(text)
    assert [(k, v) for k, v, _, _ in found] == [("hours", 48.0), ("months", 12.0)]
    k, v, s, e = found[1]
    assert text[s:e] == "一年"
