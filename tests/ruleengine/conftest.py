"""Shared fixtures for rule engine tests: the default rule set and a tokenizer built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa_inspect.ruleengine import RuleSet, load_ruleset
from qa_inspect.text.tokenize import Tokenizer


@pytest.fixture(scope="session")
def default_ruleset(rules_dir: Path) -> RuleSet:
    return load_ruleset(rules_dir)


@pytest.fixture(scope="session")
def rule_tokenizer(rules_dir: Path) -> Tokenizer:
    return Tokenizer.from_rules(rules_dir)  # includes the rule phrases, like the pipeline's
