"""Fast paths of the rule engine: same findings as evaluating every rule on every message.

``run_rules`` skips a rule for a chat that contains none of its phrases, matchers reject a
text with one joined regex, views and matcher results are cached per call. These tests pin
that the shortcuts are exact.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pandas as pd
import pytest

from qa_inspect import schema
from qa_inspect.config import load_shops
from qa_inspect.ingest import ingest_paths
from qa_inspect.ruleengine import RuleSet, apply_rules, load_ruleset
from qa_inspect.ruleengine.engine import Compiled, Env, _matcher_specs
from qa_inspect.ruleengine.matching import _alternation
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, tokenize


@pytest.fixture(scope="module")
def sample(sample_logs_dir: Path, rules_dir: Path, rule_tokenizer: Tokenizer) -> pd.DataFrame:
    msgs = ingest_paths([sample_logs_dir], rules_dir=rules_dir).messages
    return tokenize(normalize(msgs), rule_tokenizer)


def test_joined_regex_rejects_exactly(sample: pd.DataFrame, default_ruleset: RuleSet) -> None:
    env = Env(default_ruleset, {})
    matchers = [env.matcher(s) for r in default_ruleset.rules for s in _matcher_specs(r)]
    with_patterns = [m for m in matchers if m.patterns]
    assert with_patterns
    texts = set(sample[schema.NORM_TEXT])
    for m in with_patterns:
        assert m.any_pattern is not None
        for t in texts:
            assert (m.any_pattern.search(t) is None) == all(p.search(t) is None for p in m.patterns), t


@pytest.mark.parametrize("patterns", [[r"(a)\1"], [r"(?P<x>a)", r"b"], [r"(?P<x>a)(?P=x)"], ["x", "(?i)abc"]])
def test_joined_regex_not_built_when_unsafe(patterns: list[str]) -> None:
    assert _alternation([re.compile(p) for p in patterns]) is None


def test_joined_regex_built_for_plain_patterns() -> None:
    alt = _alternation([re.compile(r"\?"), re.compile(r"吗(?:$|[\s,.])")])
    assert alt is not None and alt.search("好吗") and not alt.search("好的")


def test_partition_equals_conversations_one_by_one(sample: pd.DataFrame, default_ruleset: RuleSet,
                                                   rules_dir: Path) -> None:
    """Per-call caches and per-chat skips carry nothing from one conversation to another."""
    shops = load_shops(rules_dir)
    whole = apply_rules(sample, default_ruleset, shops)
    assert len(whole) > 100
    ids = sorted(sample[schema.CONVERSATION_ID].unique())[:120]
    sub = sample[sample[schema.CONVERSATION_ID].isin(ids)]
    alone = pd.concat([apply_rules(g, default_ruleset, shops) for _, g in sub.groupby(schema.CONVERSATION_ID)],
                      ignore_index=True)
    mine = whole[whole[schema.CONVERSATION_ID].isin(ids)]
    cols = list(schema.FINDING_COLUMNS)
    pd.testing.assert_frame_equal(mine.sort_values(cols).reset_index(drop=True),
                                  alone.sort_values(cols).reset_index(drop=True))


def test_compiled_rule_set_is_shared_and_changes_nothing(sample: pd.DataFrame, rules_dir: Path) -> None:
    """The automaton, matchers and joined regexes are built once per rule set (``RuleSet.compiled``)
    and reused by later calls: findings equal those of a rule set compiled afresh, and a pickled
    rule set carries none of it (workers compile their own)."""
    shops = load_shops(rules_dir)
    fresh = load_ruleset(rules_dir)
    assert fresh.compiled is None
    first = apply_rules(sample, fresh, shops)
    compiled = fresh.compiled
    assert isinstance(compiled, Compiled) and compiled.automaton and compiled.matchers and compiled.parts
    automaton = compiled.automaton[0]
    again = apply_rules(sample, fresh, shops)
    assert fresh.compiled is compiled and compiled.automaton[0] is automaton  # reused, not rebuilt
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, apply_rules(sample, load_ruleset(rules_dir), shops))
    assert pickle.loads(pickle.dumps(fresh)).compiled is None


def test_compiled_entries_follow_the_object_not_a_recycled_id(default_ruleset: RuleSet) -> None:
    """Entries are keyed by id(); an id now naming another object must not get its entry."""
    env = Env(default_ruleset, {})
    spec = next(s for r in default_ruleset.rules for s in _matcher_specs(r) if s.phrases)
    other = next(s for r in default_ruleset.rules for s in _matcher_specs(r) if s.phrases and s is not spec)
    env._compiled.matchers[id(spec)] = env.matcher(other)  # as if ``other`` had lived at this address
    assert env.matcher(spec).spec is spec
    owner, imposter = object(), object()
    env._compiled.parts[(id(owner), "x")] = (imposter, "stale")
    assert env.compiled(owner, "x", lambda: "built") == "built"
    assert env.compiled(owner, "x", lambda: "rebuilt") == "built"  # then kept


def test_compiled_rule_set_follows_a_changed_rules_list(sample: pd.DataFrame, rules_dir: Path) -> None:
    """Rules dropped from or added to ``RuleSet.rules`` after a call: the next call compiles
    afresh, with the findings of a rule set loaded that way."""
    shops = load_shops(rules_dir)
    rs = load_ruleset(rules_dir)
    apply_rules(sample, rs, shops)
    before = rs.compiled
    keep = [r for r in rs.rules if r.type == "phrase"][:3]
    rs.rules = keep
    got = apply_rules(sample, rs, shops)
    assert rs.compiled is not before
    pd.testing.assert_frame_equal(got, apply_rules(sample, load_ruleset(rules_dir).subset([r.id for r in keep]),
                                                   shops))
    assert len(got)

