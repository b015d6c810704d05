"""Every default rule's pass/fail examples, one test id per rule and example.

"fail" examples must make the rule fire, "pass" examples must not; they include the negation,
quoting and buyer-phrase traps of each rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qa_inspect.ruleengine import RuleSet, load_ruleset
from qa_inspect.ruleengine.check import example_shops, run_example
from qa_inspect.ruleengine.engine import Env
from qa_inspect.text.tokenize import Tokenizer

RULES = Path(__file__).resolve().parents[2] / "rules"


def _cases() -> list:
    rs = load_ruleset(RULES)
    cases = []
    for rule in rs.rules:
        for kind, examples in (("fail", rule.examples.fail), ("pass", rule.examples.pass_)):
            for j in range(len(examples)):
                cases.append(pytest.param(rule.id, kind, j, id=f"{rule.id}-{kind}{j}"))
    return cases


@pytest.fixture(scope="module")
def example_env(default_ruleset: RuleSet) -> Env:
    return Env(default_ruleset, example_shops())


@pytest.mark.parametrize(("rule_id", "kind", "index"), _cases())
def test_rule_example(rule_id: str, kind: str, index: int, default_ruleset: RuleSet,
                      rule_tokenizer: Tokenizer, example_env: Env) -> None:
    rule = default_ruleset.by_id(rule_id)
    example = (rule.examples.fail if kind == "fail" else rule.examples.pass_)[index]
    findings = run_example(default_ruleset, rule, example, rule_tokenizer, example_env)
    if kind == "fail":
        assert len(findings) >= 1, f"{rule_id} should fire on {example!r}"
        assert set(findings["rule_id"]) == {rule_id}
    else:
        assert findings.empty, f"{rule_id} fired on pass example {example!r}: {list(findings['explanation'])}"


def test_every_rule_has_pass_and_fail_examples(default_ruleset: RuleSet) -> None:
    for rule in default_ruleset.rules:
        assert rule.examples.fail and rule.examples.pass_, rule.id


def test_default_rules_cover_required_dimensions_and_types(default_ruleset: RuleSet) -> None:
    dims = {r.dimension for r in default_ruleset.rules}
    types = {r.type for r in default_ruleset.rules}
    assert {"attitude", "responsiveness", "selling"} <= dims
    assert {"phrase", "regex", "timing", "unanswered", "sequence", "template"} <= types
    assert any(r.veto for r in default_ruleset.rules)
