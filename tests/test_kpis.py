"""KPI definitions (docs/kpis.md) on a hand-built batch with answers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.kpis import (
    ATTRIBUTED_SALES,
    AVG_RESPONSE,
    CONVERSATIONS,
    CONVERSION_RATE,
    CONVERTED,
    FIRST_RESPONSE_AVG,
    INQUIRIES,
    PER_DAY,
    REPLY_RATE,
    SLOW_REPLIES,
    UNANSWERED,
    agent_kpis,
    conversation_stats,
    events_frame,
)
from qa_inspect.scoring.conversations import build_conversations

SHOPS = {"s": Shop(shop_id="s", name="S", platform="tmall", timezone="Asia/Shanghai",
                   business_hours={"start": "09:00", "end": "24:00"})}
PRESALE = ["多少钱", "有货"]


def msgs(cid: str, customer: str, agent: str, rows: list[tuple[str, str, str, bool, str | None, float | None]]
         ) -> list[dict]:
    """rows: (local time 'YYYY-MM-DD HH:MM:SS', role, text, auto_reply, event, amount)."""
    out = []
    for seq, (t, role, text, auto, event, amount) in enumerate(rows):
        out.append({S.PLATFORM: "tmall", S.SHOP_ID: "s", S.CONVERSATION_ID: cid, S.SEQ: seq,
                    S.TS: pd.Timestamp(t, tz="Asia/Shanghai").tz_convert("UTC"), S.ROLE: role,
                    S.AGENT_ID: agent, S.CUSTOMER_ID: customer, S.TEXT: text, S.SKU: None,
                    S.IS_AUTO_REPLY: auto, S.EVENT: event, S.AMOUNT: amount, S.SOURCE_FILE: "f",
                    S.SOURCE_LINE: seq + 1})
    return out


@pytest.fixture()
def batch() -> pd.DataFrame:
    d = "2026-11-23 "
    rows = []
    # A (agent a1, buyer b1): inquiry; first reply 30 s (bot auto-reply ignored); second turn of two
    # customer messages answered after 120 s (slow at 60 s); a final question never answered.
    rows += msgs("A", "b1", "a1", [
        (d + "10:00:00", "customer", "这个多少钱？", False, None, None),
        (d + "10:00:01", "bot", "【自动回复】欢迎", True, None, None),
        (d + "10:00:30", "agent", "99元哦", False, None, None),
        (d + "10:01:00", "customer", "有货吗", False, None, None),
        (d + "10:01:10", "customer", "急用", False, None, None),
        (d + "10:03:00", "agent", "有的", False, None, None),
        (d + "10:05:00", "customer", "什么时候发货？", False, None, None),
    ])
    # P: a system-only conversation later that night for b1 with a payment of 99 -> belongs to A.
    rows += msgs("P", "b1", None, [(d + "11:00:00", "system", "[付款]", False, "payment", 99.0)])
    # B (agent a1, buyer b2): after-sales, answered in 10 s, no events.
    rows += msgs("B", "b2", "a1", [
        (d + "12:00:00", "customer", "退货怎么弄", False, None, None),
        (d + "12:00:10", "agent", "亲，点申请退货即可", False, None, None),
    ])
    # C (agent a2, buyer b3): inquiry at 02:00 (outside business hours: not timed) with an order
    # and a payment of 50 inside the chat.
    rows += msgs("C", "b3", "a2", [
        (d + "02:00:00", "customer", "有货吗", False, None, None),
        (d + "09:30:00", "agent", "有的", False, None, None),
        (d + "09:31:00", "system", "[下单]", False, "order", 50.0),
        (d + "09:32:00", "system", "[付款]", False, "payment", 50.0),
    ])
    # D (agent a2, buyer b4) on the next night: inquiry, no purchase.
    rows += msgs("D", "b4", "a2", [
        ("2026-11-24 20:00:00", "customer", "多少钱", False, None, None),
        ("2026-11-24 20:00:20", "agent", "88", False, None, None),
    ])
    df = pd.DataFrame(rows)
    df[S.AGENT_ID] = df[S.AGENT_ID].astype("string")
    return df


def kpis(batch: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    conv = build_conversations(batch, SHOPS, PRESALE)
    stats = conversation_stats(batch, conv, SHOPS, slow_reply_s=60)
    return agent_kpis(stats, events_frame(batch, SHOPS), by=by)


def test_conversation_summary(batch: pd.DataFrame) -> None:
    conv = build_conversations(batch, SHOPS, PRESALE).set_index(S.CONVERSATION_ID)
    assert conv.loc["A", S.FIRST_RESPONSE_S] == 30
    assert conv.loc["C", S.FIRST_RESPONSE_S] == 7.5 * 3600
    assert bool(conv.loc["A", "presale_intent"]) and not bool(conv.loc["B", "presale_intent"])
    assert conv.loc["D", S.NIGHT] == "2026-11-24" and conv.loc["C", S.NIGHT] == "2026-11-23"
    assert conv.loc["A", S.N_MESSAGES] == 7 and conv.loc["A", S.AGENT_ID] == "a1"
    assert math.isnan(conv.loc["P", S.FIRST_RESPONSE_S])


def test_agent_kpis(batch: pd.DataFrame) -> None:
    k = kpis(batch, (S.SHOP_ID, S.AGENT_ID)).set_index(S.AGENT_ID)
    a1 = k.loc["a1"]
    assert a1[CONVERSATIONS] == 2
    # timed turns: A 30 s, A 120 s, B 10 s  (A's last turn never answered)
    assert a1[AVG_RESPONSE] == pytest.approx((30 + 120 + 10) / 3)
    assert a1[FIRST_RESPONSE_AVG] == pytest.approx((30 + 10) / 2)
    assert a1[SLOW_REPLIES] == 1
    # customer messages: A 4 (3 followed by an agent reply), B 1 (replied)
    assert a1[REPLY_RATE] == pytest.approx(4 / 5)
    assert a1[UNANSWERED] == 1
    # inquiries: A only (B is after-sales); converted via the later payment, 99 attributed
    assert a1[INQUIRIES] == 1 and a1[CONVERTED] == 1 and a1[CONVERSION_RATE] == 1.0
    assert a1[ATTRIBUTED_SALES] == pytest.approx(99.0)
    a2 = k.loc["a2"]
    # C is outside business hours -> not timed; D answered in 20 s
    assert a2[AVG_RESPONSE] == pytest.approx(20.0)
    assert a2[INQUIRIES] == 2 and a2[CONVERTED] == 1 and a2[CONVERSION_RATE] == 0.5
    assert a2[ATTRIBUTED_SALES] == pytest.approx(50.0)  # payment only, the order is not added
    assert a2[PER_DAY] == pytest.approx(1.0)  # 2 conversations over 2 nights


def test_shop_and_night_grouping(batch: pd.DataFrame) -> None:
    shop = kpis(batch, (S.SHOP_ID,)).iloc[0]
    assert shop[CONVERSATIONS] == 5
    assert shop[ATTRIBUTED_SALES] == pytest.approx(149.0)
    assert shop[PER_DAY] == pytest.approx(2.5)
    nightly = kpis(batch, (S.SHOP_ID, S.AGENT_ID, S.NIGHT))
    a2 = nightly[nightly[S.AGENT_ID] == "a2"].set_index(S.NIGHT)
    assert a2.loc["2026-11-23", CONVERSION_RATE] == 1.0 and a2.loc["2026-11-24", CONVERSION_RATE] == 0.0
