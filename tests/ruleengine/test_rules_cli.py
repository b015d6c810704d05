"""``qa-inspect rules check|stats`` through the typer app: exit codes and output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from qa_inspect.cli import app

runner = CliRunner()


def test_check_default_rules_ok(rules_dir: Path) -> None:
    res = runner.invoke(app, ["rules", "check", "--rules", str(rules_dir)])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and "examples behave as documented" in res.output


def test_check_broken_rules_exit_1_with_location(tmp_path: Path, rules_dir: Path) -> None:
    shutil.copy(rules_dir / "attitude.yaml", tmp_path / "attitude.yaml")
    text = (tmp_path / "attitude.yaml").read_text(encoding="utf-8")
    (tmp_path / "attitude.yaml").write_text(text.replace("severity: major", "severity: huge", 1), encoding="utf-8")
    res = runner.invoke(app, ["rules", "check", "--rules", str(tmp_path)])
    assert res.exit_code == 1
    assert "attitude.yaml" in res.output and "rule ATT-001" in res.output and "rules[2].severity" in res.output


def test_check_missing_folder_is_user_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["rules", "check", "--rules", str(tmp_path / "nope")])
    assert res.exit_code == 1


def _jsonl(path: Path) -> None:
    def row(i: int, who: str, msg: str, t: str) -> str:
        return json.dumps({"shop": "tw_meiyan", "conversation_id": "S1", "agent": "amy", "buyer": "lin",
                           "sent_at": f"2026-11-24T21:{t}+08:00", "sender_type": who, "message": msg,
                           "item_id": "I9", "event": None, "amount": None}, ensure_ascii=False)
    lines = [row(0, "buyer", "請問這款太貴了，能便宜點嗎", "03:11"), row(1, "agent", "愛買不買", "09:40"),
             row(2, "buyer", "你們什麼態度？", "10:00")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_stats_table_and_json(tmp_path: Path, rules_dir: Path) -> None:
    f = tmp_path / "night.jsonl"
    _jsonl(f)
    res = runner.invoke(app, ["rules", "stats", str(f), "--rules", str(rules_dir)])
    assert res.exit_code == 0, res.output
    assert "ATT-001" in res.output and "1 conversations" in res.output
    res = runner.invoke(app, ["rules", "stats", str(f), "--rules", str(rules_dir), "--format", "json"])
    assert res.exit_code == 0, res.output
    stats = {r["rule_id"]: r for r in json.loads(res.output)}
    assert stats["ATT-001"]["hits"] == 1 and stats["RSP-001"]["hits"] == 1  # 389 s > 300 s (shopee)
    assert stats["ATT-INSULT-001"]["hits"] == 0


def test_stats_bad_format_is_usage_error(tmp_path: Path, rules_dir: Path) -> None:
    f = tmp_path / "night.jsonl"
    _jsonl(f)
    res = runner.invoke(app, ["rules", "stats", str(f), "--rules", str(rules_dir), "--format", "xml"])
    assert res.exit_code == 2
