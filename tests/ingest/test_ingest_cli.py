"""The ingest and init commands through the real entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from qa_inspect import schema as S
from qa_inspect.cli import app

FIX = Path(__file__).parent / "fixtures"


def _exe() -> list[str]:
    found = shutil.which("qa-inspect") or str(Path(sys.executable).with_name("qa-inspect"))
    return [found] if Path(found).exists() else [sys.executable, "-c", "from qa_inspect.cli import main; main()"]


def test_ingest_subprocess_writes_outputs_and_summary(tmp_path: Path, rules_dir: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([*_exe(), "ingest", str(FIX / "qianniu_night1.txt"), str(FIX / "taobao_gbk.csv"),
                           "--out", str(out), "--rules", str(rules_dir)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "conversations: " in proc.stdout and "unknown sender: 1" in proc.stdout
    m = pd.read_parquet(out / "messages.parquet")
    assert len(m) == 7 + 6
    assert (out / "rejects.csv").exists()


def test_ingest_exit_codes(tmp_path: Path, rules_dir: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["ingest", str(FIX / "taobao_gbk.csv"), "--out", str(tmp_path / "o"),
                            "--encoding", "utf-8", "--rules", str(rules_dir)])
    assert r.exit_code == 1
    assert "taobao_gbk.csv:line 1" in r.output
    r = runner.invoke(app, ["ingest", str(FIX / "taobao_gbk.csv"), "--out", str(tmp_path / "o"),
                            "--session-gap", "0", "--rules", str(rules_dir)])
    assert r.exit_code == 2
    r = runner.invoke(app, ["ingest", str(FIX / "taobao_gbk.csv"), "--out", str(tmp_path / "o"),
                            "--format", "weixin", "--rules", str(rules_dir)])
    assert r.exit_code == 1 and "known:" in r.output


def test_ingest_session_gap_option(tmp_path: Path, rules_dir: Path) -> None:
    r = CliRunner().invoke(app, ["ingest", str(FIX / "qianniu_night1.txt"), "--out", str(tmp_path / "o"),
                                 "--session-gap", "30", "--rules", str(rules_dir)])
    assert r.exit_code == 0, r.output
    m = pd.read_parquet(tmp_path / "o" / "messages.parquet")
    assert m[S.CONVERSATION_ID].nunique() == 2  # tb_小鹿乱撞 merged, jd_阿花 separate


def test_init_copies_rules_and_refuses_non_empty(tmp_path: Path) -> None:
    target = tmp_path / "myrules"
    runner = CliRunner()
    r = runner.invoke(app, ["init", str(target)])
    assert r.exit_code == 0, r.output
    assert (target / "import_profiles" / "taobao_csv.yaml").exists()
    r = runner.invoke(app, ["init", str(target)])
    assert r.exit_code == 1 and "--force" in r.output
    r = runner.invoke(app, ["init", str(target), "--force"])
    assert r.exit_code == 0
