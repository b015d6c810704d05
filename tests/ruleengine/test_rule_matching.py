"""Matcher details on small hand-written rule sets: negation scope, exclusions, nesting, absent
rules, preconditions and the example dialogue syntax."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from qa_inspect.ruleengine import RuleSet, load_ruleset, ruleset_words
from qa_inspect.ruleengine.check import ExampleError, example_messages, example_shops, run_example
from qa_inspect.ruleengine.engine import Env
from qa_inspect.text.tokenize import Tokenizer

HEAD = """\
  - id: {id}
    name: n
    type: {type}
    dimension: attitude
    severity: minor
    points: 1
    polarity: "-"
    description: d
    examples: {{fail: ["x"], pass: ["y"]}}
"""


@pytest.fixture()
def make(tmp_path: Path):
    def build(*rules: str) -> tuple[RuleSet, Tokenizer, Env]:
        (tmp_path / "r.yaml").write_text("rules:\n" + "".join(textwrap.dedent(r) for r in rules), encoding="utf-8")
        rs = load_ruleset(tmp_path)
        tok = Tokenizer(words=[(w, None, None) for w in ruleset_words(rs)])
        return rs, tok, Env(rs, example_shops())

    return build


def fires(rs: RuleSet, tok: Tokenizer, env: Env, rule_id: str, example: str | list[str]) -> bool:
    return not run_example(rs, rs.by_id(rule_id), example, tok, env).empty


def rule(id: str, type: str, extra: str) -> str:
    return HEAD.format(id=id, type=type) + textwrap.indent(textwrap.dedent(extra), "    ")


def test_negation_stops_at_punctuation_and_respects_window(make) -> None:
    rs, tok, env = make(rule("T-001", "phrase", "phrases: [不知道]\n"))
    assert not fires(rs, tok, env, "T-001", "我不会不知道的")
    assert fires(rs, tok, env, "T-001", "不会，不知道")  # the comma ends the negator's scope
    assert fires(rs, tok, env, "T-001", "我也不知道")


def test_exclude_overlap_vs_unless_anywhere(make) -> None:
    rs, tok, env = make(rule("T-001", "phrase", "phrases: [自己看]\nexclude: [自己看看详情]\n"),
                        rule("T-002", "phrase", "phrases: [不清楚]\nunless: [帮您查]\n"))
    assert not fires(rs, tok, env, "T-001", "您可以自己看看详情")
    assert fires(rs, tok, env, "T-001", "自己看看详情，别的自己看")  # a second, non-excluded hit
    assert not fires(rs, tok, env, "T-002", "不清楚哦，我帮您查一下")
    assert fires(rs, tok, env, "T-002", "不清楚哦")


def test_nested_phrase_inside_a_longer_rule_phrase_token(make) -> None:
    rs, tok, env = make(rule("T-001", "phrase", "phrases: [付款]\n"), rule("T-002", "phrase", "phrases: [记得付款]\n"))
    assert "记得付款" in tok.lcut("记得付款哦")
    assert fires(rs, tok, env, "T-001", "记得付款哦")


def test_absent_first_window_and_customer_role(make) -> None:
    rs, tok, env = make(
        rule("T-001", "phrase", "phrases: [您好]\nmatch: absent\napplies_to: {position: first, window: 2}\n"),
        rule("T-002", "phrase", "phrases: [投诉]\napplies_to: {role: customer}\n"))
    assert fires(rs, tok, env, "T-001", ["买家: 在吗", "客服: 在", "客服: 说", "客服: 您好"])
    assert not fires(rs, tok, env, "T-001", ["买家: 在吗", "客服: 在", "客服: 您好"])
    assert not fires(rs, tok, env, "T-001", ["买家: 在吗"])  # no agent message: N/A
    assert fires(rs, tok, env, "T-002", ["买家: 我要投诉", "客服: 好的"])
    assert not fires(rs, tok, env, "T-002", ["买家: 好的", "客服: 您可以投诉"])


def test_event_preconditions(make) -> None:
    rs, tok, env = make(rule("T-001", "phrase", "phrases: [付款]\nwhen: {has_event: [order], lacks_event: [payment]}\n"))
    assert fires(rs, tok, env, "T-001", ["下单: 已下单", "客服: 记得付款"])
    assert not fires(rs, tok, env, "T-001", ["下单: 已下单", "付款: 已付", "客服: 记得付款"])
    assert not fires(rs, tok, env, "T-001", ["客服: 记得付款"])


def test_example_dialogue_syntax(default_ruleset: RuleSet) -> None:
    rule_ = default_ruleset.by_id("RSP-001")
    msgs, ex = example_messages(rule_, ["@0 买家: 在吗", "@3 机器人: 【自动回复】欢迎", "客服: 在的", "@245 客服: 在"])
    assert list(msgs["role"]) == ["customer", "bot", "agent", "agent"]
    assert list(msgs["is_auto_reply"]) == [False, True, False, False]
    secs = (msgs["ts"] - msgs["ts"].iloc[0]).dt.total_seconds().tolist()
    assert secs == [0, 3, 3, 245]  # a line without @ keeps the previous time
    assert msgs["ts"].iloc[0] == pd.Timestamp("2026-11-23 20:00", tz="Asia/Shanghai")
    with pytest.raises(ExampleError):
        example_messages(rule_, ["老板: 在吗"])
    with pytest.raises(ExampleError):
        example_messages(rule_, "timing rules need dialogues")
