"""Configuration errors name the file, the rule id and the key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from qa_inspect.errors import ConfigError
from qa_inspect.ruleengine import check_rules, load_ruleset

GOOD = """\
  - id: T-001
    name: 测试
    type: phrase
    dimension: attitude
    severity: minor
    points: 2
    polarity: "-"
    description: d
    phrases: [爱买不买]
    examples: {fail: [爱买不买], pass: [好的]}
"""


def write(tmp: Path, name: str, body: str) -> Path:
    p = tmp / name
    p.write_text("rules:\n" + textwrap.dedent(body), encoding="utf-8")
    return p


def error_of(tmp: Path) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load_ruleset(tmp)
    return exc.value


def test_unknown_key(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD + "    phrasez: [x]\n")
    err = error_of(tmp_path)
    assert err.file and err.file.endswith("a.yaml")
    assert err.rule_id == "T-001" and err.key_path == "rules[0].phrasez"
    assert "unknown key" in str(err)


def test_wrong_type_in_nested_key(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD.replace("points: 2", "points: many")
          + GOOD.replace("T-001", "T-002").replace("position: any", "")
          .replace("    phrases: [爱买不买]", "    phrases: [爱买不买]\n    applies_to: {role: boss}"))
    err = error_of(tmp_path)
    assert (err.rule_id, err.key_path) == ("T-001", "rules[0].points")
    report = check_rules(tmp_path)
    where = {(p.rule_id, p.key_path) for p in report.problems}
    assert ("T-002", "rules[1].applies_to.role") in where  # check reports every error, not just the first
    assert not report.ok


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    err = error_of(tmp_path)
    assert err.file and err.file.endswith("b.yaml")
    assert err.rule_id == "T-001" and err.key_path == "rules[0].id"
    assert "duplicate" in str(err) and "a.yaml" in str(err)


def test_unknown_rule_type_lists_known(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD.replace("type: phrase", "type: vibes"))
    err = error_of(tmp_path)
    assert err.key_path == "rules[0].type" and "phrase" in str(err) and "timing" in str(err)


def test_bad_regex_and_missing_examples(tmp_path: Path) -> None:
    body = GOOD.replace("type: phrase", "type: regex").replace("phrases: [爱买不买]", "patterns: ['(unclosed']")
    write(tmp_path, "a.yaml", body)
    err = error_of(tmp_path)
    assert err.key_path == "rules[0].patterns" and "regular expression" in str(err)
    write(tmp_path, "a.yaml", GOOD.replace("examples: {fail: [爱买不买], pass: [好的]}", "examples: {fail: [爱买不买]}"))
    assert "pass" in str(error_of(tmp_path))


def test_timing_threshold_platform_typo(tmp_path: Path) -> None:
    body = GOOD.replace("type: phrase", "type: timing").replace(
        "    phrases: [爱买不买]\n", "    metric: first_response\n    threshold_s: {default: 180, jdd: 30}\n")
    write(tmp_path, "a.yaml", body)
    err = error_of(tmp_path)
    assert err.key_path == "rules[0].threshold_s" and "jdd" in str(err)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - id: [unclosed\n", encoding="utf-8")
    err = error_of(tmp_path)
    assert err.file and err.file.endswith("a.yaml") and "line" in (err.key_path or "")


def test_failing_example_is_reported_with_key_path(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD.replace("pass: [好的]", "pass: [好的, 你爱买不买]"))
    report = check_rules(tmp_path)
    assert [(p.rule_id, p.key_path) for p in report.problems] == [("T-001", "rules[0].examples.pass[1]")]
    assert "fired on pass example" in report.render()


def test_other_stage_files_are_not_rule_sets(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    (tmp_path / "shops.yaml").write_text("shops: []\n", encoding="utf-8")
    (tmp_path / "scorecard.yaml").write_text("version: 1\n", encoding="utf-8")
    assert [r.id for r in load_ruleset(tmp_path).rules] == ["T-001"]


def test_version_changes_with_rule_files_and_dictionary(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    v1 = load_ruleset(tmp_path).version
    assert load_ruleset(tmp_path).version == v1
    write(tmp_path, "a.yaml", GOOD.replace("points: 2", "points: 3"))
    v2 = load_ruleset(tmp_path).version
    (tmp_path / "dict").mkdir()
    (tmp_path / "dict" / "w.txt").write_text("爱买不买\n", encoding="utf-8")
    assert len({v1, v2, load_ruleset(tmp_path).version}) == 3
