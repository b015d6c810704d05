"""Generic profile importer: rejects with line/field/reason, CSV line numbers, XLSX, JSONL, profiles."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect.errors import ConfigError, InputError, UsageError
from qa_inspect.ingest import ingest_paths, load_profiles

FIX = Path(__file__).parent / "fixtures"
HDR = "店铺,会话编号,客服账号,买家昵称,发送时间,发送方,消息内容,商品ID,消息类型,金额"


def _rejects(res) -> list[tuple[int, str, str]]:
    r = res.rejects.sort_values(S.REJECT_LINE)
    return list(zip(r[S.REJECT_LINE], r[S.REJECT_FIELD], r[S.REJECT_REASON], strict=True))


def test_csv_bad_rows_land_in_rejects_with_line_field_reason(rules_dir: Path) -> None:
    res = ingest_paths([FIX / "taobao_gbk.csv"], rules_dir=rules_dir)
    # line 4-5 is one quoted two-line message, so the bad rows sit on physical lines 6, 7, 8.
    assert _rejects(res) == [(6, "消息内容", "empty text"), (7, "发送时间", "unparseable time"),
                             (8, "发送方", "unknown role")]
    assert set(res.rejects[S.REJECT_FILE]) == {str(FIX / "taobao_gbk.csv")}
    assert res.summary()["rejects_by_reason"] == {"empty text": 1, "unknown role": 1, "unparseable time": 1}
    m = res.messages
    assert len(m) + len(res.rejects) == 9
    two_line = m[m[S.TEXT].str.contains("\n")]
    assert two_line[S.SOURCE_LINE].tolist() == [4]
    assert two_line[S.TEXT].iloc[0] == "亲，在的哦~\n这款是100%新疆长绒棉的"


def test_csv_mapping_events_auto_reply_timezone(rules_dir: Path) -> None:
    m = ingest_paths([FIX / "taobao_gbk.csv"], rules_dir=rules_dir).messages
    assert m[S.TS].dtype == "datetime64[ns, UTC]"
    first = m[m[S.SOURCE_LINE] == 2].iloc[0]
    assert first[S.TS] == pd.Timestamp("2026-11-25 12:15:03", tz="UTC")  # 20:15:03 Asia/Shanghai
    assert first[S.CONVERSATION_ID] == "tmall_yuejia:C001"
    assert first[S.PLATFORM] == "tmall" and first[S.ROLE] == "customer"
    assert first[S.AGENT_ID] == "悦家家居旗舰店:小美"
    auto = m[m[S.IS_AUTO_REPLY]]
    assert auto[S.SOURCE_LINE].tolist() == [3] and auto[S.ROLE].tolist() == ["bot"]
    order = m[m[S.EVENT].notna()]
    assert order[S.EVENT].tolist() == ["order"] and order[S.AMOUNT].tolist() == [299.0]
    assert order[S.ROLE].tolist() == ["system"]
    # C002 crosses midnight; seq follows time, 0-based, per conversation.
    c2 = m[m[S.CONVERSATION_ID] == "tmall_yuejia:C002"]
    assert c2[S.SEQ].tolist() == [0, 1]


def test_seq_orders_by_time_then_source_order(tmp_path: Path, rules_dir: Path) -> None:
    rows = [
        "悦家家居旗舰店,K1,a1,b1,2026-11-25 10:00:05,客服,second,,文本,",
        "悦家家居旗舰店,K1,a1,b1,2026-11-25 10:00:00,买家,first,,文本,",
        "悦家家居旗舰店,K1,a1,b1,2026-11-25 10:00:05,买家,third (same time; later line),,文本,",
    ]
    p = tmp_path / "t.csv"
    p.write_text(HDR + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    m = ingest_paths([p], rules_dir=rules_dir).messages
    assert m.sort_values(S.SEQ)[S.TEXT].tolist() == ["first", "second", "third (same time; later line)"]


def test_irregular_csv_uses_exact_slow_path(tmp_path: Path, rules_dir: Path) -> None:
    rows = [
        "悦家家居旗舰店,K1,a1,b1,2026-11-25 10:00:00,买家,hello,,文本,",
        "",
        "悦家家居旗舰店,K1,a1,b1,2026-11-25 10:00:05,客服,short row",
        "悦家家居旗舰店,K1,a1,b1,2026-11-25 10:00:09,客服,\"multi",
        "line\",,文本,",
        "悦家家居旗舰店,K1,a1,b1,2026-11-25 10:00:10,客服,¥ amount,,文本,abc",
    ]
    p = tmp_path / "t.csv"
    p.write_text(HDR + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    res = ingest_paths([p], rules_dir=rules_dir)
    assert _rejects(res) == [(4, "(row)", "wrong number of fields"), (7, "金额", "unparseable amount")]
    assert res.messages[S.SOURCE_LINE].tolist() == [2, 5]


def test_unknown_shop_is_rejected_per_row(tmp_path: Path, rules_dir: Path) -> None:
    rows = ["悦家家居旗舰店,K1,a1,b1,2026-11-25 10:00:00,买家,hi,,文本,",
            "不存在的店,K2,a1,b1,2026-11-25 10:00:00,买家,hi,,文本,"]
    p = tmp_path / "t.csv"
    p.write_text(HDR + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    res = ingest_paths([p], rules_dir=rules_dir)
    assert _rejects(res) == [(3, "店铺", "unknown shop")]


def _write_jd_xlsx(path: Path) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "聊天记录"
    ws.append(["店铺名称", "会话ID", "客服ERP", "顾客账号", "时间", "角色", "内容", "SKU", "订单金额"])
    t0 = dt.datetime(2026, 11, 24, 21, 0, 0)
    ws.append(["极客数码京东旗舰店", "J1", "jike_a", "jd_u1", t0, "顾客", "耳机有货吗", 100012, None])
    ws.append(["极客数码京东旗舰店", "J1", "jike_a", "jd_u1", t0 + dt.timedelta(seconds=5), "机器人",
               "您好，我是智能助手", 100012, None])
    ws.append(["极客数码京东旗舰店", "J1", "jike_a", "jd_u1", t0 + dt.timedelta(seconds=30), "客服",
               "有的亲", 100012, None])
    ws.append(["极客数码京东旗舰店", "J1", "jike_a", "jd_u1", t0 + dt.timedelta(minutes=2), "系统",
               "[下单] 降噪耳机 ×1", 100012, 399])
    ws.append(["极客数码京东旗舰店", "J1", "jike_a", "jd_u1", "2026-11-24 2O:15:33", "顾客", "好的", 100012, None])
    ws.append(["极客数码京东旗舰店", "J1", "jike_a", "jd_u1", t0 + dt.timedelta(minutes=3), "未知", "转接", 100012,
               None])
    ws.append(["极客数码京东旗舰店", "J1", "jike_a", "jd_u1", t0 + dt.timedelta(minutes=4), "顾客", None, 100012,
               None])
    wb.create_sheet("说明").append(["not chat data"])
    wb.save(path)


def test_xlsx_datetime_cells_events_and_rejects(tmp_path: Path, rules_dir: Path) -> None:
    p = tmp_path / "jd.xlsx"
    _write_jd_xlsx(p)
    res = ingest_paths([p], rules_dir=rules_dir)
    assert res.files[0].profile == "jd_xlsx"
    assert _rejects(res) == [(6, "时间", "unparseable time"), (7, "角色", "unknown role"), (8, "内容", "empty text")]
    m = res.messages.sort_values(S.SEQ)
    assert m[S.ROLE].tolist() == ["customer", "bot", "agent", "system"]
    assert m[S.IS_AUTO_REPLY].tolist() == [False, True, False, False]
    assert m[S.SKU].tolist() == ["100012"] * 4  # numeric cell, no ".0"
    assert m[S.EVENT].tolist()[3] == "order" and m[S.AMOUNT].tolist()[3] == 399.0
    assert m[S.TS].iloc[0] == pd.Timestamp("2026-11-24 13:00:00", tz="UTC")
    assert m[S.SOURCE_LINE].tolist() == [2, 3, 4, 5]


def test_jsonl_offsets_naive_times_and_bad_json(rules_dir: Path) -> None:
    res = ingest_paths([FIX / "shopee.jsonl"], rules_dir=rules_dir)
    assert _rejects(res) == [(5, "sent_at", "unparseable time"), (6, "(line)", "invalid JSON")]
    m = res.messages.sort_values(S.SEQ)
    # An explicit +08:00 and a naive time in the shop zone (Asia/Taipei) both become UTC.
    assert m[S.TS].tolist()[0] == pd.Timestamp("2026-11-24 13:03:11", tz="UTC")
    assert m[S.TS].tolist()[3] == pd.Timestamp("2026-11-24 13:05:00", tz="UTC")
    assert m[S.IS_AUTO_REPLY].tolist() == [False, True, False, False]
    assert m[S.EVENT].tolist()[3] == "order" and m[S.AMOUNT].tolist()[3] == 1280.0
    assert m[S.PLATFORM].unique().tolist() == ["shopee"]


def test_profile_choice_and_errors(tmp_path: Path, rules_dir: Path) -> None:
    with pytest.raises(UsageError):
        ingest_paths([FIX / "taobao_gbk.csv"], rules_dir=rules_dir, profile="nope")
    with pytest.raises(InputError) as ei:
        ingest_paths([FIX / "taobao_gbk.csv"], rules_dir=rules_dir, profile="shopee_jsonl")
    assert "expects columns" in str(ei.value)


def test_profile_validation_names_file_and_key(tmp_path: Path, rules_dir: Path) -> None:
    prof_dir = tmp_path / "import_profiles"
    prof_dir.mkdir()
    text = (rules_dir / "import_profiles" / "taobao_csv.yaml").read_text(encoding="utf-8")
    (prof_dir / "mine.yaml").write_text(text.replace("  amount: 金额", "  amount: 金额\n  colour: 颜色"),
                                        encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_profiles(tmp_path)
    assert "mine.yaml" in str(ei.value) and ei.value.key_path == "columns.colour"
    (prof_dir / "mine.yaml").write_text(text.replace("买家: customer", "买家: buyer"), encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_profiles(tmp_path)
    assert ei.value.key_path == "roles.买家"


def test_bundled_profiles_load(rules_dir: Path) -> None:
    profiles = load_profiles(rules_dir)
    assert {"taobao_csv", "jd_xlsx", "shopee_jsonl"} <= set(profiles)


def test_tsv_and_json_array_use_the_same_profiles(tmp_path: Path, rules_dir: Path) -> None:
    text = (FIX / "taobao_utf8bom.csv").read_text(encoding="utf-8-sig")
    rows = [ln.split(",") for ln in text.splitlines() if ln and "\"" not in ln and "新疆" not in ln]
    tsv = tmp_path / "export.tsv"
    tsv.write_text("\n".join("\t".join(r) for r in rows) + "\n", encoding="utf-8")
    res = ingest_paths([tsv], rules_dir=rules_dir)
    assert res.files[0].format == "tsv" and res.files[0].profile == "taobao_csv"
    assert len(res.messages) + len(res.rejects) == len(rows) - 1

    recs = [dict(zip(["shop", "conversation_id", "agent", "buyer", "sent_at", "sender_type", "message"],
                     ["tw_meiyan", "A1", "amy", "b1", f"2026-11-24T21:0{i}:00+08:00", st, msg], strict=True))
            for i, (st, msg) in enumerate([("buyer", "你好"), ("agent", "您好"), ("alien", "??")])]
    js = tmp_path / "export.json"
    import json

    js.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    res = ingest_paths([js], rules_dir=rules_dir, profile="shopee_jsonl")
    assert res.files[0].format == "json"
    assert res.messages[S.TEXT].tolist() == ["你好", "您好"]
    assert _rejects(res) == [(3, "sender_type", "unknown role")]


def test_custom_profile_without_conversation_ids_is_sessionised(tmp_path: Path, rules_dir: Path) -> None:
    rules = tmp_path / "rules"
    (rules / "import_profiles").mkdir(parents=True)
    (rules / "shops.yaml").write_text((rules_dir / "shops.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (rules / "import_profiles" / "pdd_tsv.yaml").write_text(
        "format: tsv\nshop_id: pdd_demo\nplatform: pdd\ntimezone: Asia/Shanghai\n"
        "time_format: '%Y/%m/%d %H:%M'\n"
        "columns: {customer_id: 买家, ts: 时间, role: 身份, text: 内容, agent_id: 客服}\n"
        "roles: {客服: agent, 买家: customer}\n", encoding="utf-8")
    lines = ["买家\t时间\t身份\t内容\t客服",
             "u1\t2026/11/25 10:00\t买家\t在吗\t",
             "u1\t2026/11/25 10:01\t客服\t在的\tkf1",
             "u1\t2026/11/25 10:30\t买家\t还有一个问题\t",
             "u2\t2026/11/25 10:02\t买家\t发货没\t"]
    p = tmp_path / "pdd.tsv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    m = ingest_paths([p], rules_dir=rules).messages
    assert m[S.PLATFORM].unique().tolist() == ["pdd"]
    assert sorted(m[S.CONVERSATION_ID].unique()) == ["pdd_demo:u1:20261125T100000", "pdd_demo:u1:20261125T103000",
                                                     "pdd_demo:u2:20261125T100200"]
    first = m[m[S.CONVERSATION_ID] == "pdd_demo:u1:20261125T100000"].sort_values(S.SEQ)
    assert first[S.AGENT_ID].tolist() == ["kf1", "kf1"]  # customer row gets the serving agent
