"""Shared fixtures for rule engine tests: the default rule set and a tokenizer built once."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from qa_inspect.ruleengine import RuleSet, load_ruleset
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, tokenize


@pytest.fixture(scope="session")
def default_ruleset(rules_dir: Path) -> RuleSet:
    return load_ruleset(rules_dir)


@pytest.fixture(scope="session")
def rule_tokenizer(rules_dir: Path) -> Tokenizer:
    return Tokenizer.from_rules(rules_dir)  # includes the rule phrases, like the pipeline's


@pytest.fixture(scope="module")
def prep(rule_tokenizer: Tokenizer):
    """Normalise and tokenise hand-built chats the way the pipeline does."""

    def run(*chats: pd.DataFrame) -> pd.DataFrame:
        return tokenize(normalize(pd.concat(chats, ignore_index=True)), rule_tokenizer)

    return run
