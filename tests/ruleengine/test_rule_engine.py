"""Engine behaviour by rule type: token-aware phrases, timing with business hours, sequences,
unanswered questions, batch templates across partitions, findings contract, stats."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from qa_inspect import schema
from qa_inspect.config import BusinessHours, Shop
from qa_inspect.ruleengine import (
    RuleSet,
    apply_rules,
    apply_template_rules,
    merge_template_counts,
    rule_stats,
    template_counts,
)
from qa_inspect.ruleengine.engine import shop_template_key
from qa_inspect.ruleengine.types import clock_start
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, tokenize

SHOPS = {
    "tm": Shop(shop_id="tm", name="天猫店", platform="tmall"),
    "jd": Shop(shop_id="jd", name="京东店", platform="jd", business_hours=BusinessHours(start="08:30")),
    "tw": Shop(shop_id="tw", name="台灣店", platform="shopee", timezone="Asia/Taipei", locale="zh-TW"),
}
Line = tuple[str, str] | tuple[str, str, str | None]


def chat(cid: str, lines: Sequence[Line], shop: str = "tm", auto: Sequence[int] = ()) -> pd.DataFrame:
    """lines: (role, text[, 'YYYY-MM-DD HH:MM:SS' shop-local])."""
    tz = SHOPS[shop].timezone
    rows = []
    for i, line in enumerate(lines):
        role, text = line[0], line[1]
        ts = pd.Timestamp(line[2], tz=tz).tz_convert("UTC") if len(line) > 2 and line[2] else pd.NaT
        rows.append({schema.PLATFORM: SHOPS[shop].platform, schema.SHOP_ID: shop,
                     schema.CONVERSATION_ID: f"{shop}:{cid}", schema.SEQ: i, schema.TS: ts,
                     schema.ROLE: "bot" if i in auto else role, schema.AGENT_ID: "a1" if role == "agent" else None,
                     schema.CUSTOMER_ID: "c1", schema.TEXT: text, schema.SKU: None,
                     schema.IS_AUTO_REPLY: i in auto, schema.EVENT: None, schema.AMOUNT: None,
                     schema.SOURCE_FILE: "t", schema.SOURCE_LINE: i + 1})
    df = pd.DataFrame(rows, columns=list(schema.MESSAGE_COLUMNS))
    df[schema.TS] = pd.to_datetime(df[schema.TS], utc=True)
    return df


def fired(findings: pd.DataFrame, rule_id: str) -> pd.DataFrame:
    return findings[findings[schema.RULE_ID] == rule_id]


# --- phrase matching --------------------------------------------------------------------------

def test_negation_quote_and_role_traps(prep, default_ruleset: RuleSet) -> None:
    part = prep(
        chat("1", [("customer", "不知道选哪个，你们客服是不是不知道啊"), ("agent", "亲，不会不知道的，我帮您查")]),
        chat("2", [("customer", "什么时候到"), ("agent", "您说的“不知道”是指物流吗")]),
        chat("3", [("customer", "什么时候到"), ("agent", "不知道")]),
    )
    f = fired(apply_rules(part, default_ruleset, SHOPS), "ATT-002")
    assert list(f[schema.CONVERSATION_ID]) == ["tm:3"]


def test_token_boundary_blocks_substring_hits(prep, default_ruleset: RuleSet) -> None:
    part = prep(chat("1", [("customer", "充电口是什么"), ("agent", "是usb接口哦")]),
                chat("2", [("customer", "你们客服"), ("agent", "你是sb吗")]))
    f = fired(apply_rules(part, default_ruleset, SHOPS), "ATT-INSULT-001")
    assert list(f[schema.CONVERSATION_ID]) == ["tm:2"]


def test_evidence_offsets_point_into_original_traditional_full_width_text(prep, default_ruleset: RuleSet) -> None:
    text = "ＯＫ，讓您久等了，非常抱歉"
    part = prep(chat("1", [("customer", "怎麼還沒發貨"), ("agent", text)], shop="tw"))
    f = fired(apply_rules(part, default_ruleset, SHOPS), "ATT-101").iloc[0]
    assert f[schema.EVIDENCE] == text[f[schema.EVIDENCE_START]:f[schema.EVIDENCE_END]] == "讓您久等了"
    assert f[schema.MESSAGE_INDEX] == 1 and f[schema.AGENT_ID] == "a1"
    assert f[schema.SOURCE] == "rule" and f[schema.CONFIDENCE] == 1.0


def test_findings_follow_the_contract(prep, default_ruleset: RuleSet) -> None:
    part = prep(chat("1", [("customer", "在吗"), ("agent", "爱买不买"), ("customer", "你们什么态度？")]))
    f = apply_rules(part, default_ruleset, SHOPS)
    assert list(f.columns) == list(schema.FINDING_COLUMNS)
    assert f.dtypes.to_dict() == schema.empty_findings().dtypes.to_dict()
    row = fired(f, "ATT-001").iloc[0]
    assert (row[schema.POLARITY], row[schema.SEVERITY], row[schema.DIMENSION]) == ("-", "major", "attitude")
    unanswered = fired(f, "RSP-004").iloc[0]
    assert unanswered[schema.MESSAGE_INDEX] == 2


# --- timing -----------------------------------------------------------------------------------

def test_first_response_ignores_auto_reply_and_uses_platform_threshold(prep, default_ruleset: RuleSet) -> None:
    tm = chat("1", [("customer", "在吗", "2026-11-23 20:00:00"), ("agent", "【自动回复】欢迎", "2026-11-23 20:00:02"),
                    ("agent", "在的亲", "2026-11-23 20:04:05")], auto=[1])
    tm_fast = chat("2", [("customer", "在吗", "2026-11-23 20:00:00"), ("agent", "在的亲", "2026-11-23 20:00:45")])
    jd_slow = chat("3", [("customer", "在吗", "2026-11-23 20:00:00"), ("agent", "在的", "2026-11-23 20:00:45")],
                   shop="jd")
    f = fired(apply_rules(prep(tm, tm_fast, jd_slow), default_ruleset, SHOPS), "RSP-001")
    assert sorted(f[schema.CONVERSATION_ID]) == ["jd:3", "tm:1"]
    tm_row = f[f[schema.CONVERSATION_ID] == "tm:1"].iloc[0]
    assert tm_row[schema.MESSAGE_INDEX] == 2
    assert "245 秒" in tm_row[schema.EXPLANATION] and "180 秒" in tm_row[schema.EXPLANATION]


def test_clock_starts_at_opening_outside_business_hours(prep, default_ruleset: RuleSet) -> None:
    night = chat("1", [("customer", "在吗", "2026-11-24 00:30:00"), ("agent", "早上好亲", "2026-11-24 09:02:00")])
    early = chat("2", [("customer", "在吗", "2026-11-24 08:00:00"), ("agent", "早上好亲", "2026-11-24 09:04:00")])
    late = chat("3", [("customer", "在吗", "2026-11-23 23:50:00"), ("agent", "在的亲", "2026-11-23 23:54:00")])
    f = fired(apply_rules(prep(night, early, late), default_ruleset, SHOPS), "RSP-001")
    assert sorted(f[schema.CONVERSATION_ID]) == ["tm:2", "tm:3"]  # 120 s after 09:00 is fine, 240 s is not


def test_clock_start_uses_shop_timezone_and_hours() -> None:
    tz = ZoneInfo("Asia/Taipei")
    hours = BusinessHours(start="09:00", end="22:00")
    assert clock_start(pd.Timestamp("2026-11-24 08:00", tz=tz), tz, hours) == pd.Timestamp("2026-11-24 09:00", tz=tz)
    assert clock_start(pd.Timestamp("2026-11-24 22:30", tz=tz), tz, hours) == pd.Timestamp("2026-11-25 09:00", tz=tz)
    inside = pd.Timestamp("2026-11-24 12:00", tz=tz)
    assert clock_start(inside, tz, hours) == inside


def test_timing_is_not_applicable_without_timestamps(prep, default_ruleset: RuleSet) -> None:
    part = prep(chat("1", [("customer", "在吗"), ("agent", "在的")]))
    f = apply_rules(part, default_ruleset, SHOPS)
    assert not set(f[schema.RULE_ID]) & {"RSP-001", "RSP-002", "RSP-003"}


def test_reply_delays_and_slow_count(prep, default_ruleset: RuleSet) -> None:
    lines: list[Line] = []
    t = pd.Timestamp("2026-11-23 20:00:00")
    for k in range(4):
        lines.append(("customer", f"问题{k}吗", str(t)))
        t += pd.Timedelta(seconds=150)
        lines.append(("agent", f"回答{k}", str(t)))
        t += pd.Timedelta(seconds=10)
    f = apply_rules(prep(chat("1", lines)), default_ruleset, SHOPS)
    assert list(fired(f, "RSP-002")[schema.MESSAGE_INDEX]) == [1, 3, 5, 7]
    slow = fired(f, "RSP-003")
    assert len(slow) == 1 and slow.iloc[0][schema.MESSAGE_INDEX] == -1 and "4 次" in slow.iloc[0][schema.EXPLANATION]


# --- sequence / unanswered -----------------------------------------------------------------------

def test_price_objection_sequence(prep, default_ruleset: RuleSet) -> None:
    missed = chat("1", [("customer", "太贵了"), ("agent", "不议价"), ("agent", "还有问题吗")])
    handled = chat("2", [("customer", "太贵了"), ("agent", "亲，现在领券满299减30")])
    never = chat("3", [("customer", "太贵了")])
    f = apply_rules(prep(missed, handled, never), default_ruleset, SHOPS)
    assert list(fired(f, "SEL-009")[schema.CONVERSATION_ID]) == ["tm:1"]
    assert list(fired(f, "SEL-010")[schema.CONVERSATION_ID]) == ["tm:2"]
    assert fired(f, "SEL-009").iloc[0][schema.EVIDENCE] == "太贵了"


# --- batch templates ------------------------------------------------------------------------------

TEMPLATE_SCRIPT = [("customer", "在吗"), ("agent", "您好，欢迎光临本店，有什么可以帮您"), ("customer", "有货吗"),
                   ("agent", "亲，页面显示有货的都可以直接拍哦"), ("customer", "什么时候发"),
                   ("agent", "亲，付款后按付款顺序尽快发出的哦"), ("customer", "能便宜点吗"),
                   ("agent", "亲，价格都是公司统一定的哦"), ("customer", "好"), ("agent", "感谢您的支持，祝您生活愉快")]


def _template_batch(n: int) -> list[pd.DataFrame]:
    chats = [chat(f"t{i}", TEMPLATE_SCRIPT) for i in range(n)]
    chats.append(chat("own", [("customer", "在吗"), ("agent", "您好，欢迎光临本店，有什么可以帮您"),
                              ("customer", "有蓝色吗"), ("agent", "蓝色今天刚到货，库存二十件左右"),
                              ("customer", "好"), ("agent", "那我给您备注蓝色，明天一早发顺丰")]))
    return chats


def test_template_counts_merge_across_partitions(prep, default_ruleset: RuleSet) -> None:
    chats = _template_batch(24)
    whole = prep(*chats)
    p1, p2 = prep(*chats[:10]), prep(*chats[10:])
    merged = merge_template_counts([template_counts(p1), template_counts(p2)])
    assert merged == template_counts(whole)
    assert merged[shop_template_key("tm", "您好,欢迎光临本店,有什么可以帮您")] == 25
    split = pd.concat([apply_template_rules(p, default_ruleset, merged) for p in (p1, p2)], ignore_index=True)
    together = apply_template_rules(whole, default_ruleset, merged)
    assert sorted(split[schema.CONVERSATION_ID]) == sorted(together[schema.CONVERSATION_ID])
    mec1 = fired(together, "MEC-001")
    assert len(mec1) == 24 and "tm:own" not in set(mec1[schema.CONVERSATION_ID])
    # per partition alone, no text reaches 20 conversations in p1: batch counts matter
    assert apply_template_rules(p1, default_ruleset, template_counts(p1)).empty


def test_partitioning_does_not_change_findings(prep, default_ruleset: RuleSet) -> None:
    chats = [chat("1", [("customer", "太贵了"), ("agent", "爱买不买")]),
             chat("2", [("customer", "在吗"), ("agent", "亲，非常抱歉让您久等了")]),
             chat("3", [("customer", "在吗"), ("agent", "不知道")])]
    whole = apply_rules(prep(*chats), default_ruleset, SHOPS)
    parts = pd.concat([apply_rules(prep(c), default_ruleset, SHOPS) for c in reversed(chats)], ignore_index=True)
    key = [schema.CONVERSATION_ID, schema.MESSAGE_INDEX, schema.RULE_ID]
    pd.testing.assert_frame_equal(whole.sort_values(key).reset_index(drop=True),
                                  parts.sort_values(key).reset_index(drop=True))


def test_empty_partition_gives_empty_findings(prep, default_ruleset: RuleSet) -> None:
    empty = prep(chat("x", [("customer", "a")])).iloc[0:0]
    f = apply_rules(empty, default_ruleset, SHOPS)
    assert f.empty and list(f.columns) == list(schema.FINDING_COLUMNS)


# --- stats ------------------------------------------------------------------------------------

def test_rule_stats_hits_coverage_conflicts(prep, default_ruleset: RuleSet) -> None:
    part = prep(chat("1", [("customer", "在吗"), ("agent", "爱买不买")]),
                chat("2", [("customer", "在吗"), ("agent", "亲，在的")]),
                chat("3", [("customer", "怎么还没发货"), ("agent", "抱歉，不知道")]))
    stats = rule_stats(part, default_ruleset, SHOPS).set_index("rule_id")
    assert stats.loc["ATT-001", "hits"] == 1 and stats.loc["ATT-001", "coverage"] == pytest.approx(1 / 3, abs=1e-4)
    assert "爱买不买" in stats.loc["ATT-001", "samples"]
    # ATT-101 (+ apology) and ATT-002 (- 不知道) on the same message: a conflict for both
    assert stats.loc["ATT-101", "conflicts"] == 1 and stats.loc["ATT-002", "conflicts"] == 1
    assert "ATT-002" in stats.loc["ATT-101", "overlap"]
    assert len(stats) == len(default_ruleset.rules)


def test_rule_stats_tokenizes_raw_messages(default_ruleset: RuleSet) -> None:
    raw = chat("1", [("customer", "在吗"), ("agent", "爱买不买")])
    stats = rule_stats(raw, default_ruleset, SHOPS).set_index("rule_id")
    assert stats.loc["ATT-001", "hits"] == 1


def test_rule_stats_default_rules_on_jddc_sample(shared_data: Path, default_ruleset: RuleSet,
                                                 rule_tokenizer: Tokenizer) -> None:
    cols = ["session_id", "user_id", "waiter_send", "is_transfer", "is_repeat", "sku", "content"]
    raw = pd.read_csv(shared_data / "jddc" / "chat_sample.tsv", sep="\t", header=None, names=cols, dtype=str,
                      quoting=3, keep_default_na=False, nrows=3000)
    sessions = [chat(sid, [("agent" if w == "1" else "customer", c) for w, c in zip(g["waiter_send"], g["content"],
                                                                                     strict=True)], shop="jd")
                for sid, g in raw.groupby("session_id", sort=False)]
    part = tokenize(normalize(pd.concat(sessions, ignore_index=True)), rule_tokenizer)
    f = apply_rules(part, default_ruleset, SHOPS)
    assert not f.empty
    assert not set(f[schema.RULE_ID]) & {"RSP-001", "RSP-002", "RSP-003"}  # no timestamps in JDDC
    spans = f[f[schema.EVIDENCE_START] >= 0].merge(
        part[[schema.CONVERSATION_ID, schema.SEQ, schema.TEXT]],
        left_on=[schema.CONVERSATION_ID, schema.MESSAGE_INDEX], right_on=[schema.CONVERSATION_ID, schema.SEQ])
    assert len(spans) > 0
    assert all(t[s:e] == ev for t, s, e, ev in zip(spans[schema.TEXT], spans[schema.EVIDENCE_START],
                                                  spans[schema.EVIDENCE_END], spans[schema.EVIDENCE], strict=True))


def test_ruleset_pickles_for_process_pools(prep, default_ruleset: RuleSet) -> None:
    import pickle

    part = prep(chat("1", [("customer", "太贵了"), ("agent", "爱买不买")]))
    clone = pickle.loads(pickle.dumps(default_ruleset))
    assert clone.version == default_ruleset.version
    pd.testing.assert_frame_equal(apply_rules(part, clone, SHOPS), apply_rules(part, default_ruleset, SHOPS))
