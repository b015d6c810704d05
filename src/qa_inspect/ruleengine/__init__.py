"""Declarative rule engine: YAML rule sets → findings records (see docs/rules.md)."""

from qa_inspect.ruleengine.check import CheckReport, check_rules
from qa_inspect.ruleengine.engine import (
    apply_all_rules,
    apply_rules,
    apply_template_rules,
    merge_template_counts,
    ruleset_words,
    template_counts,
)
from qa_inspect.ruleengine.ruleset import RuleSet, load_ruleset
from qa_inspect.ruleengine.stats import rule_stats, stats_report
from qa_inspect.ruleengine.types import RULE_TYPES

__all__ = [
    "RULE_TYPES",
    "CheckReport",
    "check_rules",
    "rule_stats",
    "stats_report",
    "RuleSet",
    "apply_all_rules",
    "apply_rules",
    "apply_template_rules",
    "load_ruleset",
    "merge_template_counts",
    "ruleset_words",
    "template_counts",
]
