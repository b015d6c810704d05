"""``compile_scanning`` leads a pattern with a lookahead on the characters its matches start
with: every match, span and group must stay exactly those of ``re.compile``."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_inspect.ruleengine.matching import compile_scanning, first_chars
from qa_inspect.ruleengine.ruleset import RuleSet
from qa_inspect.ruleengine.types import DEFAULT_QUESTION_PATTERNS, PartialAnswerRule, _TopicIndex

_ALPHABET = "价保多少钱钱吗?什么怎么时候发货到哪了快递单号订a1 2,。pc_x\n"


def _same(pattern: str, texts: list[str]) -> None:
    plain, fast = re.compile(pattern), compile_scanning(pattern)
    for t in texts:
        want = [(m.span(), m.groups(), m.lastgroup, m.groupdict()) for m in plain.finditer(t)]
        got = [(m.span(), m.groups(), m.lastgroup, m.groupdict()) for m in fast.finditer(t)]
        assert got == want, (pattern, t)
        assert (plain.search(t) is None) == (fast.search(t) is None)


def test_first_chars() -> None:
    assert first_chars("abc") == {"a"}
    assert first_chars("a?b") == {"a", "b"}
    assert first_chars("(?<![满减])[¥$]\\s*\\d") == {"¥", "$"}
    assert first_chars("(?P<t0>价保|保价)|(?P<t1>多少钱)") == {"价", "保", "多"}
    assert first_chars("\\bpc\\b") == {"p"}
    # unknown: classes, negations, scoped or global flags; or a pattern that matches ""
    for p in ("\\dabc", "[^a]b", ".x", "(?i)abc", "(?i:abc)", "x|y*", "", "a*"):
        assert first_chars(p) is None, p


def test_lookahead_only_where_re_has_no_prefix() -> None:
    assert compile_scanning("多少钱|价格").pattern == "多少钱|价格"  # literal branches: re skips itself
    assert compile_scanning("[ab]c").pattern == "[ab]c"
    assert compile_scanning("(?P<t0>价保|保价)|(?P<t1>多少钱)").pattern.startswith("(?=[")
    assert compile_scanning("\\dabc").pattern == "\\dabc"


@pytest.fixture(scope="module")
def topic_patterns(default_ruleset: RuleSet) -> list[str]:
    rules = [r for r in default_ruleset.rules if isinstance(r, PartialAnswerRule)]
    assert rules
    index = _TopicIndex(rules[0].topics)
    return [index.ask.pattern, index.cover.pattern, "|".join(f"(?:{p})" for p in DEFAULT_QUESTION_PATTERNS)]


def test_rule_set_patterns_scan_faster_and_match_the_same(topic_patterns: list[str]) -> None:
    ask = topic_patterns[0]
    fast = compile_scanning(ask)
    assert fast.pattern != ask  # the joined topic regex is the case this is for
    texts = ["这个多少钱？什么时候发货", "价保吗", "快递到哪了，单号多少", "亲，有现货的哦", "", "?", "多长时间到",
             "不合适能退吗", "适合敏感肌吗", "订单号是多少", "pc材质吗", "a+b的成分"]
    for p in topic_patterns:
        _same(p.pattern if isinstance(p, re.Pattern) else p, texts)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(_ALPHABET, min_size=0, max_size=30), min_size=1, max_size=5))
def test_topic_patterns_on_generated_text(topic_patterns: list[str], texts: list[str]) -> None:
    for p in topic_patterns:
        _same(p, texts)


_PIECES = st.sampled_from(["价保", "保价", "多少", "钱", "吗", "\\?", "(?<!订)单号", "多长(?!时间)", "[¥$]\\s*\\d",
                           "(?:快递|包裹)(?:到哪|在哪)", "到哪(?:了|儿了)", "\\bpc\\b", "a+", "x{1,2}", "(?:什么|怎么)?时候",
                           "(?<![不合])适合", "(?:今天|明天)?发"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_PIECES, min_size=1, max_size=3), min_size=1, max_size=4),
       st.lists(st.text(_ALPHABET + "适合不今天明天包裹在", max_size=25), min_size=1, max_size=4))
def test_generated_alternations(branches: list[list[str]], texts: list[str]) -> None:
    pattern = "|".join(f"(?P<t{k}>{''.join(b)})" for k, b in enumerate(branches))
    _same(pattern, texts)
