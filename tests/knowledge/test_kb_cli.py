"""``qa-inspect kb check``: summary on a valid KB, exit 1 with a located message on a broken one."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from qa_inspect.cli import app


def test_kb_check_ok(rules_dir: Path) -> None:
    res = CliRunner().invoke(app, ["kb", "check", "--rules", str(rules_dir)])
    assert res.exit_code == 0, res.output
    assert "tmall_yuejia:" in res.output and "OK" in res.output


def test_kb_check_reports_broken_catalog(tmp_path: Path, rules_dir: Path) -> None:
    shutil.copy(rules_dir / "shops.yaml", tmp_path / "shops.yaml")
    shutil.copytree(rules_dir / "knowledge", tmp_path / "knowledge")
    cat = tmp_path / "knowledge" / "jd_jike" / "catalog.csv"
    lines = cat.read_text(encoding="utf-8-sig").splitlines()
    lines[2] = lines[2].replace(",159,", ",一百五,", 1)
    cat.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["kb", "check", "--rules", str(tmp_path)])
    assert res.exit_code == 1
    assert "catalog.csv" in res.output and "row 3.price" in res.output
