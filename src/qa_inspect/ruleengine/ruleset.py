"""Loading rule set files into a RuleSet, with located configuration errors and a version hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from qa_inspect.config import config_error_from_validation, load_yaml
from qa_inspect.errors import ConfigError, UserError
from qa_inspect.ruleengine.spec import RuleBase
from qa_inspect.ruleengine.types import RULE_TYPES

# Other stages own these YAML files in the same folder; everything else at the top level is a
# rule set, so a misspelt rule file is an error rather than silently ignored.
NOT_RULE_FILES = frozenset({"shops.yaml", "scorecard.yaml", "models.yaml"})


class RuleFileHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ruleset: str | None = None
    description: str | None = None
    rules: list[Any]


@dataclass
class RuleSet:
    """Validated rules of a folder. ``version`` hashes the rule files and the user dictionary."""

    rules: list[RuleBase]
    version: str
    rules_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    source: dict[str, tuple[str, int]] = field(default_factory=dict)  # rule id -> (file, index)
    # What the rules compile to (automaton, matchers, joined regexes), built by the first Env
    # and reused by later calls in this process: a pure function of the rules, so it changes no
    # result; it never holds anything about texts. Not pickled (workers build their own).
    compiled: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["compiled"] = None
        return state

    def by_id(self, rule_id: str) -> RuleBase:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise UserError(f"unknown rule '{rule_id}'")

    def subset(self, rule_ids: list[str]) -> RuleSet:
        keep = set(rule_ids)
        return RuleSet([r for r in self.rules if r.id in keep], self.version, self.rules_dir,
                       self.files, {k: v for k, v in self.source.items() if k in keep})


def rule_files(rules_dir: Path) -> list[Path]:
    d = Path(rules_dir)
    if not d.is_dir():
        raise UserError(f"rules folder not found: {d}")
    return sorted(p for p in [*d.glob("*.yaml"), *d.glob("*.yml")] if p.name not in NOT_RULE_FILES)


def ruleset_version(files: list[Path], rules_dir: Path) -> str:
    """sha256 over rule files and dict/*.txt (the dictionary changes what phrases match)."""
    h = hashlib.sha256()
    extra = sorted((Path(rules_dir) / "dict").glob("*.txt")) if (Path(rules_dir) / "dict").is_dir() else []
    for p in [*files, *extra]:
        if not p.is_file():  # a folder named x.yaml: load_yaml reports it, do not crash hashing it
            continue
        h.update(p.relative_to(rules_dir).as_posix().encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def parse_rule(raw: Any, *, file: str, index: int) -> RuleBase:
    """Validate one rule mapping; errors name file, rule id and key path (``rules[3].points``)."""
    prefix = ("rules", index)
    if not isinstance(raw, dict):
        raise ConfigError("a rule must be a mapping", file=file, key_path=f"rules[{index}]")
    rule_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    type_name = raw.get("type")
    if not isinstance(type_name, str):
        raise ConfigError("missing 'type' (one of: " + ", ".join(RULE_TYPES.names()) + ")",
                          file=file, rule_id=rule_id, key_path=f"rules[{index}].type")
    if type_name not in RULE_TYPES:
        raise ConfigError(f"unknown rule type '{type_name}'; known: {', '.join(RULE_TYPES.names())}",
                          file=file, rule_id=rule_id, key_path=f"rules[{index}].type")
    cls = RULE_TYPES.get(type_name)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise config_error_from_validation(exc, file=file, rule_id=rule_id, prefix=prefix) from None


def parse_rule_file(path: Path) -> tuple[list[tuple[int, RuleBase]], list[ConfigError]]:
    """All rules of one file, and every error found (check reports them all at once)."""
    data = load_yaml(path)
    if data is None:
        return [], [ConfigError("empty rule file", file=str(path))]
    try:
        header = RuleFileHeader.model_validate(data)
    except ValidationError as exc:
        return [], [config_error_from_validation(exc, file=str(path))]
    rules: list[tuple[int, RuleBase]] = []
    errors: list[ConfigError] = []
    for i, raw in enumerate(header.rules):
        try:
            rules.append((i, parse_rule(raw, file=str(path), index=i)))
        except ConfigError as err:
            errors.append(err)
    return rules, errors


def collect_ruleset(rules_dir: Path | str) -> tuple[RuleSet, list[ConfigError]]:
    """Parse every rule file, collecting errors instead of stopping at the first."""
    rules_dir = Path(rules_dir)
    files = rule_files(rules_dir)
    rules: list[RuleBase] = []
    errors: list[ConfigError] = []
    source: dict[str, tuple[str, int]] = {}
    for f in files:
        try:
            file_rules, file_errors = parse_rule_file(f)
        except ConfigError as err:
            errors.append(err)
            continue
        errors.extend(file_errors)
        for idx, r in file_rules:
            if r.id in source:
                first = source[r.id][0]
                errors.append(ConfigError(f"duplicate rule id (already defined in {first})", file=str(f),
                                          rule_id=r.id, key_path=f"rules[{idx}].id"))
                continue
            source[r.id] = (str(f), idx)
            rules.append(r)
    return RuleSet(rules, ruleset_version(files, rules_dir), rules_dir, files, source), errors


def load_ruleset(rules_dir: Path | str) -> RuleSet:
    """Load and validate every rule set file of ``rules_dir``; the first error is raised.

    Disabled rules (``enabled: false``) are validated but left out of ``.rules``.
    """
    ruleset, errors = collect_ruleset(rules_dir)
    if errors:
        raise errors[0]
    if not ruleset.rules:
        raise ConfigError("no rules found (expected rule set files like attitude.yaml)",
                          file=str(rules_dir))
    ruleset.rules = [r for r in ruleset.rules if r.enabled]
    return ruleset
