"""Qianniu TXT: multi-line messages, agent prefixes, auto-replies, sessionisation, bad lines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect.errors import InputError
from qa_inspect.ingest import ingest_paths

FIX = Path(__file__).parent / "fixtures"
QN = FIX / "qianniu_night1.txt"


def test_messages_roles_and_multiline(rules_dir: Path) -> None:
    res = ingest_paths([QN], rules_dir=rules_dir)
    m = res.messages
    assert res.files[0].format == "qianniu"
    assert len(m) == 7 and len(res.rejects) == 3
    assert m[S.PLATFORM].unique().tolist() == ["tmall"]
    multi = m[m[S.SOURCE_LINE] == 5].iloc[0]
    assert multi[S.TEXT] == "亲，在的哦~\n这款是100%新疆长绒棉的"
    assert multi[S.ROLE] == "agent" and multi[S.AGENT_ID] == "悦家家居旗舰店:小美"
    auto = m[m[S.IS_AUTO_REPLY]]
    assert auto[S.SOURCE_LINE].tolist() == [4]
    assert auto[S.ROLE].tolist() == ["bot"] and auto[S.AGENT_ID].tolist() == ["悦家家居旗舰店:小美"]
    buyer_rows = m[m[S.ROLE] == "customer"]
    assert set(buyer_rows[S.CUSTOMER_ID]) == {"tb_小鹿乱撞", "jd_阿花"}
    # customer rows carry the agent serving their conversation
    assert buyer_rows[S.AGENT_ID].notna().all()


def test_bad_lines_rejected_with_line_and_reason(rules_dir: Path) -> None:
    r = ingest_paths([QN], rules_dir=rules_dir).rejects.sort_values(S.REJECT_LINE)
    assert list(zip(r[S.REJECT_LINE], r[S.REJECT_FIELD], r[S.REJECT_REASON], strict=True)) == [
        (9, "text", "empty text"), (10, "time", "unparseable time"), (11, "sender", "unknown sender")]


def test_sessionisation_gap(rules_dir: Path) -> None:
    m = ingest_paths([QN], rules_dir=rules_dir).messages
    lu = m[m[S.CUSTOMER_ID] == "tb_小鹿乱撞"]
    # 20:15:40 -> 20:40:00 is a 24 min silence: two conversations at the default 10 min gap
    assert lu[S.CONVERSATION_ID].nunique() == 2
    assert sorted(lu[S.CONVERSATION_ID].unique()) == ["tmall_yuejia:tb_小鹿乱撞:20261123T201503",
                                                       "tmall_yuejia:tb_小鹿乱撞:20261123T204000"]
    second = lu[lu[S.CONVERSATION_ID].str.endswith("T204000")].sort_values(S.SEQ)
    assert second[S.SEQ].tolist() == [0, 1]
    assert second[S.AGENT_ID].tolist() == ["悦家家居旗舰店:小丽"] * 2
    merged = ingest_paths([QN], rules_dir=rules_dir, session_gap_minutes=30).messages
    lu30 = merged[merged[S.CUSTOMER_ID] == "tb_小鹿乱撞"]
    assert lu30[S.CONVERSATION_ID].nunique() == 1
    assert lu30.sort_values(S.SEQ)[S.SOURCE_LINE].tolist() == [3, 4, 5, 7, 8]


def test_session_spanning_two_files_is_one_conversation(tmp_path: Path, rules_dir: Path) -> None:
    head = "# 千牛聊天记录导出 店铺:悦家家居旗舰店 导出时间:2026-11-24 08:00:00\n===== 买家:tb_夜猫 =====\n"
    (tmp_path / "n1.txt").write_text(head + "2026-11-23 23:58:00 tb_夜猫: 还在吗\n", encoding="utf-8")
    (tmp_path / "n2.txt").write_text(head + "2026-11-24 00:01:00 悦家家居旗舰店:小美: 在的亲\n",
                                     encoding="utf-8")
    m = ingest_paths([tmp_path], rules_dir=rules_dir).messages
    assert m[S.CONVERSATION_ID].nunique() == 1
    assert m.sort_values(S.SEQ)[S.TEXT].tolist() == ["还在吗", "在的亲"]
    assert m[S.TS].min() == pd.Timestamp("2026-11-23 15:58:00", tz="UTC")


def test_unknown_shop_in_header_fails(tmp_path: Path, rules_dir: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("# 千牛聊天记录导出 店铺:别人家的店 导出时间:2026-11-24 08:00:00\n", encoding="utf-8")
    with pytest.raises(InputError) as ei:
        ingest_paths([p], rules_dir=rules_dir)
    assert ei.value.line == 1 and "别人家的店" in str(ei.value)


def test_forced_format_on_non_qianniu_file_fails(rules_dir: Path) -> None:
    with pytest.raises(InputError, match="not a Qianniu export"):
        ingest_paths([FIX / "taobao_utf8bom.csv"], rules_dir=rules_dir, fmt="qianniu")
