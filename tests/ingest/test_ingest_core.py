"""ingest_paths end to end: detection, folder walking, accounting, outputs, sample_logs/."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect.errors import UserError
from qa_inspect.ingest import IMPORTERS, collect_files, detect_format, ingest_paths, write_ingest
from qa_inspect.ingest.encoding import decode_bytes

FIX = Path(__file__).parent / "fixtures"
SAMPLE_LOGS = Path(__file__).resolve().parents[2] / "sample_logs"
_TS_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d")


def test_registry_lists_every_format() -> None:
    assert IMPORTERS.names() == sorted(["csv", "tsv", "xlsx", "json", "jsonl", "qianniu", "jddc", "stc3"])
    with pytest.raises(UserError, match="known:"):
        IMPORTERS.get("weixin")


def test_detect_format_by_content() -> None:
    assert detect_format(FIX / "qianniu_night1.txt") == "qianniu"
    assert detect_format(FIX / "taobao_gbk.csv") == "csv"
    assert detect_format(FIX / "shopee.jsonl") == "jsonl"


def test_detect_jddc_and_tsv(tmp_path: Path) -> None:
    j = tmp_path / "a.txt"
    j.write_text("abc\tU1\t0\t0\t0\tnan\t你好\nabc\tU1\t1\t0\t0\tnan\t您好\n", encoding="utf-8")
    t = tmp_path / "b.txt"
    t.write_text("店铺\t会话编号\n", encoding="utf-8")
    assert detect_format(j) == "jddc" and detect_format(t) == "tsv"


def test_folder_walk_skips_readme_hidden_and_non_data(tmp_path: Path, rules_dir: Path) -> None:
    sub = tmp_path / "nested" / "deeper"
    sub.mkdir(parents=True)
    shutil.copy(FIX / "taobao_gbk.csv", sub / "a.csv")
    (tmp_path / "README.md").write_text("x", encoding="utf-8")
    (tmp_path / "README.txt").write_text("x", encoding="utf-8")
    (tmp_path / ".hidden.csv").write_text("x", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.csv").write_text("x", encoding="utf-8")
    (tmp_path / "notes.yaml").write_text("x", encoding="utf-8")
    assert collect_files([tmp_path]) == [sub / "a.csv"]
    res = ingest_paths([tmp_path], rules_dir=rules_dir)
    assert res.summary()["files"] == 1


def test_empty_and_unusable_inputs_are_user_errors(tmp_path: Path, rules_dir: Path) -> None:
    with pytest.raises(UserError, match="no data files"):
        ingest_paths([tmp_path], rules_dir=rules_dir)
    with pytest.raises(UserError, match="not found"):
        ingest_paths([tmp_path / "missing.csv"], rules_dir=rules_dir)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty input"):
        ingest_paths([empty], rules_dir=rules_dir)
    bad = tmp_path / "bad.csv"
    bad.write_text("店铺,会话编号,客服账号,买家昵称,发送时间,发送方,消息内容,商品ID,消息类型,金额\n"
                   "悦家家居旗舰店,K,a,b,soon,买家,hi,,文本,\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"every row was rejected \(unparseable time: 1\)"):
        ingest_paths([bad], rules_dir=rules_dir)


def test_write_ingest_outputs(tmp_path: Path, rules_dir: Path) -> None:
    res = ingest_paths([FIX], rules_dir=rules_dir)
    paths = write_ingest(res, tmp_path / "out")
    back = pd.read_parquet(paths["messages"])
    assert list(back.columns) == list(S.MESSAGE_COLUMNS)
    assert str(back[S.TS].dtype) == "datetime64[ns, UTC]"
    assert len(back) == len(res.messages)
    raw = paths["rejects"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel opens the Chinese correctly
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert list(rows[0]) == list(S.REJECT_COLUMNS)
    assert len(rows) == len(res.rejects)
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert summary["messages"] == len(res.messages)


def test_message_contract(rules_dir: Path) -> None:
    m = ingest_paths([FIX], rules_dir=rules_dir).messages
    assert list(m.columns) == list(S.MESSAGE_COLUMNS)
    assert m.dtypes.to_dict() == S.empty_messages().dtypes.to_dict()
    assert set(m[S.ROLE]) <= set(S.ROLES)
    assert all(c.startswith(f"{s}:") for c, s in zip(m[S.CONVERSATION_ID], m[S.SHOP_ID], strict=True))
    for _, g in m.groupby(S.CONVERSATION_ID):
        assert g[S.SEQ].tolist() == list(range(len(g)))
        assert g[S.TS].is_monotonic_increasing
    assert not m.duplicated([S.CONVERSATION_ID, S.SEQ]).any()


def _count_data_rows(path: Path) -> int:
    """Count source records without the importer: the test's own reading of each format."""
    if path.suffix == ".xlsx":
        import openpyxl

        wb = openpyxl.load_workbook(path, read_only=True)
        ws = wb["聊天记录"]
        n = sum(1 for row in ws.iter_rows(values_only=True) if any(v not in (None, "") for v in row)) - 1
        wb.close()
        return n
    text, _ = decode_bytes(path.read_bytes(), file=str(path))
    if path.suffix == ".jsonl":
        return sum(1 for ln in text.splitlines() if ln.strip())
    if path.suffix == ".csv":
        return sum(1 for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)) - 1
    return sum(1 for ln in text.splitlines() if _TS_LINE.match(ln))  # Qianniu message lines


SAMPLE_FILES = sorted(p for p in SAMPLE_LOGS.rglob("*") if p.is_file() and not p.name.startswith(("README", "."))) \
    if SAMPLE_LOGS.is_dir() else []


@pytest.mark.skipif(not SAMPLE_FILES, reason="sample_logs/ is empty")
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.name for p in SAMPLE_FILES])
def test_every_sample_log_is_fully_accounted_for(path: Path, rules_dir: Path) -> None:
    res = ingest_paths([path], rules_dir=rules_dir)
    n = _count_data_rows(path)
    assert len(res.messages) + len(res.rejects) == n
    assert len(res.messages) > 0.9 * n
    assert res.messages[S.TS].notna().all()
    assert res.messages[S.AGENT_ID].notna().all()
    assert set(res.rejects[S.REJECT_REASON]) <= {"empty text", "unparseable time", "unknown role",
                                                 "unknown sender"}
    assert (res.rejects[S.REJECT_LINE] >= 1).all() and res.rejects[S.REJECT_FIELD].ne("").all()
