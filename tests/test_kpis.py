"""KPI definitions (docs/kpis.md) on a hand-built batch with answers worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
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
    FIRST_RESPONSE_IN_HOURS,
    INQUIRIES,
    INQUIRY,
    N_AGENT_MESSAGES,
    N_CUSTOMER_MESSAGES,
    N_QUESTIONS,
    N_REPLIED,
    N_SLOW,
    N_TURNS_TIMED,
    N_UNANSWERED,
    PER_DAY,
    QUESTION_RE,
    REPLY_RATE,
    RESPONSE_S_SUM,
    SALES_AMOUNT,
    SLOW_REPLIES,
    STATS_COLUMNS,
    UNANSWERED,
    _in_hours,
    agent_kpis,
    attribute_events,
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


# --- vectorised attribute_events == the original loop --------------------------------------------

def reference_attribute_events(stats: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """The original per-event loop of ``kpis.attribute_events``, kept verbatim as the oracle.

    An event belongs to the conversation it occurs in; an event outside any chat goes to the
    latest inquiry conversation of the same shop + customer on the same night that started at
    or before it. Conversion counts orders or payments; the sales amount counts payments only.
    """
    st = stats[[S.CONVERSATION_ID, S.SHOP_ID, S.CUSTOMER_ID, S.NIGHT, S.STARTED_AT, INQUIRY]]
    conv_ids = set(st[S.CONVERSATION_ID])
    owner: list[str | None] = []
    inq = st[st[INQUIRY]].sort_values(S.STARTED_AT, kind="stable")
    groups = {k: g for k, g in inq.groupby([S.SHOP_ID, S.CUSTOMER_ID, S.NIGHT], dropna=False)}
    for ev in events.itertuples(index=False):
        cid = getattr(ev, S.CONVERSATION_ID)
        key = (getattr(ev, S.SHOP_ID), getattr(ev, S.CUSTOMER_ID), getattr(ev, S.NIGHT))
        g = groups.get(key)
        if cid in conv_ids and g is not None and cid in set(g[S.CONVERSATION_ID]):
            owner.append(cid)
            continue
        ts = getattr(ev, S.TS)
        if g is None or pd.isna(ts):
            owner.append(cid if cid in conv_ids else None)
            continue
        before = g[g[S.STARTED_AT] <= ts]
        owner.append(before[S.CONVERSATION_ID].iloc[-1] if len(before) else (cid if cid in conv_ids else None))
    ev = events.assign(_owner=owner)
    conv_flag = ev.dropna(subset=["_owner"]).groupby("_owner").size().gt(0)
    sales = ev[ev[S.EVENT] == "payment"].dropna(subset=["_owner"]).groupby("_owner")[S.AMOUNT].sum()
    out = stats[[S.CONVERSATION_ID, INQUIRY]].copy()
    out[CONVERTED] = out[S.CONVERSATION_ID].map(conv_flag).fillna(False).astype(bool) & out[INQUIRY]
    out[SALES_AMOUNT] = out[S.CONVERSATION_ID].map(sales).fillna(0.0).astype(float)
    return out[[S.CONVERSATION_ID, CONVERTED, SALES_AMOUNT]]


def assert_same_attribution(stats: pd.DataFrame, events: pd.DataFrame) -> None:
    """Exact equality: the per-conversation sums add the same payments in the same order."""
    pd.testing.assert_frame_equal(attribute_events(stats, events), reference_attribute_events(stats, events),
                                  check_exact=True)


def test_attribution_matches_reference_on_batch(batch: pd.DataFrame) -> None:
    conv = build_conversations(batch, SHOPS, PRESALE)
    stats = conversation_stats(batch, conv, SHOPS, slow_reply_s=60)
    assert_same_attribution(stats, events_frame(batch, SHOPS))


def test_attribution_matches_reference_on_sample_logs(sample_logs_dir: Path, rules_dir: Path) -> None:
    from qa_inspect.config import load_shops
    from qa_inspect.ingest import ingest_paths

    shops = load_shops(rules_dir)
    m = ingest_paths([sample_logs_dir], rules_dir=rules_dir).messages
    conv = build_conversations(m, shops, PRESALE)
    stats = conversation_stats(m, conv, shops)
    events = events_frame(m, shops)
    assert len(events) and stats[INQUIRY].any()
    assert_same_attribution(stats, events)
    # and with every event moved out of its chat, so the "latest earlier inquiry" search decides
    assert_same_attribution(stats, events.assign(**{S.CONVERSATION_ID: "(outside)"}))


def test_attribution_edge_cases_from_messages() -> None:
    """No agent reply, bot-only chats, a missing timestamp, events whose chat is not in the stats."""
    d = "2026-11-23 "
    rows = []
    rows += msgs("Q", "b1", "a1", [(d + "10:00:00", "customer", "多少钱", False, None, None)])  # never answered
    rows += msgs("R", "b1", None, [(d + "10:05:00", "bot", "【自动回复】在的", True, None, None),
                                   (d + "10:06:00", "system", "[下单]", False, "order", 10.0)])  # bot only
    rows += msgs("T", "b1", "a1", [(d + "10:10:00", "customer", "有货吗", False, None, None),
                                   (d + "10:10:30", "agent", "有", False, None, None),
                                   (d + "10:11:00", "system", "[付款]", False, "payment", 0.1)])
    rows += msgs("U", "b1", None, [(d + "10:20:00", "system", "[付款]", False, "payment", 0.2)])
    rows += msgs("V", "b1", None, [(d + "09:00:00", "system", "[付款]", False, "payment", 5.0)])  # before any
    rows += msgs("W", "b2", None, [(d + "11:00:00", "system", "[付款]", False, "payment", 7.0)])  # no inquiry
    batch = pd.DataFrame(rows)
    batch[S.AGENT_ID] = batch[S.AGENT_ID].astype("string")
    batch.loc[batch[S.CONVERSATION_ID] == "U", S.TS] = pd.NaT
    conv = build_conversations(batch, SHOPS, PRESALE)
    events = events_frame(batch, SHOPS)
    assert events[S.TS].isna().any()
    # drop U, V and W from the stats: their events have no conversation of their own
    part = conv[~conv[S.CONVERSATION_ID].isin(["U", "V", "W"])]
    stats = conversation_stats(batch[batch[S.CONVERSATION_ID].isin(part[S.CONVERSATION_ID])], part, SHOPS)
    assert_same_attribution(stats, events)
    assert_same_attribution(conversation_stats(batch, conv, SHOPS), events)


def test_attribution_edge_cases_synthetic() -> None:
    """Tied start times, missing keys, missing start times and events in another night's chat."""
    t0 = pd.Timestamp("2026-11-23 02:00", tz="UTC")
    h = pd.Timedelta(hours=1)
    stats = pd.DataFrame({
        S.CONVERSATION_ID: ["i1", "i2", "i3", "n1", "i4", "x1", "z1", "m1"],
        S.SHOP_ID: ["s", "s", "s", "s", "s", "s", "s", None],
        S.CUSTOMER_ID: ["c", "c", "c", "c", None, "c", "c", "c"],
        S.NIGHT: ["N1", "N1", "N1", "N1", "N1", "N2", "N1", "N1"],
        S.STARTED_AT: [t0, t0 + h, t0 + h, t0 + 2 * h, t0, t0, pd.NaT, t0],
        INQUIRY: [True, True, True, False, True, True, True, True],
    }).astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.CUSTOMER_ID: "string", S.NIGHT: "string"})
    ev = [  # (conversation, shop, customer, night, ts, event, amount)
        ("i1", "s", "c", "N1", t0 + 3 * h, "payment", 0.1),   # in its own inquiry
        ("n1", "s", "c", "N1", t0 + 3 * h, "payment", 0.2),   # non-inquiry chat -> latest (tie i2/i3)
        ("n1", "s", "c", "N1", t0 + h, "order", 1.0),        # exactly at the tied start
        ("gone", "s", "c", "N1", t0 - h, "payment", 3.0),    # before every inquiry, chat unknown
        ("gone", "s", "c", "N1", t0 + h / 2, "payment", 0.3),  # unknown chat -> i1
        ("x1", "s", "c", "N1", t0 + 5 * h, "payment", 4.0),  # chat of another night -> i3
        ("i1", "s", "c", None, pd.NaT, "payment", 5.0),      # missing ts and night
        ("n1", "s", "c", "N1", pd.NaT, "payment", 6.0),      # missing ts
        ("gone", "s", None, "N1", t0 + h, "payment", 7.0),   # missing customer key
        ("m1", None, "c", "N1", t0 + h, "payment", 8.0),     # missing shop key, own chat
        ("gone", "t", "c", "N1", t0 + h, "payment", 9.0),    # shop without inquiries
        ("z1", "s", "c", "N1", t0 + 4 * h, "order", 1.0),    # chat without start time
    ]
    events = pd.DataFrame(ev, columns=[S.CONVERSATION_ID, S.SHOP_ID, S.CUSTOMER_ID, S.NIGHT, S.TS, S.EVENT,
                                       S.AMOUNT]).astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string",
                                                          S.CUSTOMER_ID: "string", S.NIGHT: "string",
                                                          S.EVENT: "string"})
    assert_same_attribution(stats, events)
    assert_same_attribution(stats, events.iloc[::-1].reset_index(drop=True))
    assert_same_attribution(stats.iloc[::-1].reset_index(drop=True), events)
    assert_same_attribution(stats, events.iloc[:0])
    assert_same_attribution(stats.iloc[:0], events)
    # the tie goes to the later row in batch order, as in the loop
    out = attribute_events(stats, events).set_index(S.CONVERSATION_ID)
    assert out.loc["i3", SALES_AMOUNT] == 0.2 + 4.0 and out.loc["i2", SALES_AMOUNT] == 0.0


def test_attribution_random_batches() -> None:
    """Many small random batches with colliding keys and start times (seeded, fast)."""
    rng = np.random.default_rng(7)
    t0 = pd.Timestamp("2026-11-23", tz="UTC")
    for _ in range(40):
        n, k = int(rng.integers(1, 30)), int(rng.integers(0, 40))
        cids = [f"c{i}" for i in range(n)]
        stats = pd.DataFrame({
            S.CONVERSATION_ID: cids,
            S.SHOP_ID: rng.choice(["s", "t"], n), S.CUSTOMER_ID: rng.choice(["a", "b", "c"], n),
            S.NIGHT: rng.choice(["N1", "N2"], n),
            S.STARTED_AT: t0 + pd.to_timedelta(rng.integers(0, 6, n), unit="h"),
            INQUIRY: rng.random(n) < 0.6,
        }).astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.CUSTOMER_ID: "string",
                   S.NIGHT: "string"})
        ts = pd.Series(t0 + pd.to_timedelta(rng.integers(-1, 7, k), unit="h"))
        ts[rng.random(k) < 0.1] = pd.NaT
        events = pd.DataFrame({
            S.CONVERSATION_ID: rng.choice([*cids, "zz"], k), S.SHOP_ID: rng.choice(["s", "t"], k),
            S.CUSTOMER_ID: rng.choice(["a", "b", "c"], k), S.TS: ts, S.EVENT: rng.choice(["order", "payment"], k),
            S.AMOUNT: rng.random(k).round(2), S.NIGHT: rng.choice(["N1", "N2"], k),
        }).astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.CUSTOMER_ID: "string",
                   S.NIGHT: "string", S.EVENT: "string"})
        assert_same_attribution(stats, events)


# --- conversation_stats == the original (next human timestamp taken without boxing) --------------

def reference_conversation_stats(messages: pd.DataFrame, conversations: pd.DataFrame, shops: dict[str, Shop],
                       *, slow_reply_s: float = 60.0) -> pd.DataFrame:
    """The original ``kpis.conversation_stats``, kept verbatim as the oracle.

    Input: messages (MESSAGE_COLUMNS, NORM_TEXT optional) and the partition's conversations
    (from ``scoring.build_conversations``: AGENT_ID, CUSTOMER_ID, NIGHT, STARTED_AT, N_MESSAGES,
    ``presale_intent``). Output: STATS_COLUMNS, one row per conversation. Human agent = role agent
    and not an auto-reply; bots and system rows neither answer nor open a turn.
    """
    from qa_inspect.scoring.scorecard import PRESALE_INTENT

    S.require_columns(conversations, (S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.CUSTOMER_ID, S.NIGHT,
                                      S.STARTED_AT, S.N_MESSAGES, PRESALE_INTENT), "kpis")
    m = messages.sort_values([S.CONVERSATION_ID, S.SEQ], kind="stable").reset_index(drop=True)
    conv = m[S.CONVERSATION_ID]
    human = (m[S.ROLE] == "agent") & ~m[S.IS_AUTO_REPLY].fillna(False).astype(bool)
    cust = m[S.ROLE] == "customer"
    pos = pd.Series(np.arange(len(m), dtype="float64"), index=m.index)
    hpos = pos.where(human)
    next_human = hpos.groupby(conv).bfill()  # position of the next human message at/after the row
    prev_human = hpos.groupby(conv).ffill().fillna(-1.0)
    replied = cust & next_human.notna()
    # A turn: the customer messages since the last human message; timed from its first message.
    keys = pd.DataFrame({"c": conv, "p": prev_human})
    turn_start = pd.Series(False, index=m.index)
    turn_start[cust] = ~keys[cust].duplicated()
    nh_idx = next_human.fillna(-1).astype(int)
    next_ts = pd.Series(pd.NaT, index=m.index, dtype=m[S.TS].dtype)
    has = nh_idx >= 0
    next_ts[has] = m[S.TS].to_numpy()[nh_idx[has].to_numpy()]
    resp = (next_ts - m[S.TS]).dt.total_seconds()
    timed = turn_start & resp.notna() & _in_hours(m[S.TS], m[S.SHOP_ID], shops)
    text = (m[S.NORM_TEXT] if S.NORM_TEXT in m.columns else m[S.TEXT]).fillna("").astype(str)
    question = cust & text.str.contains(QUESTION_RE, regex=True)
    first_turn = turn_start & ~turn_start.groupby(conv).cumsum().gt(1)

    per = pd.DataFrame({
        S.CONVERSATION_ID: conv,
        N_CUSTOMER_MESSAGES: cust.astype(int),
        N_AGENT_MESSAGES: human.astype(int),
        N_REPLIED: replied.astype(int),
        N_TURNS_TIMED: timed.astype(int),
        RESPONSE_S_SUM: resp.where(timed, 0.0),
        N_SLOW: (timed & (resp > slow_reply_s)).astype(int),
        N_QUESTIONS: question.astype(int),
        N_UNANSWERED: (question & ~replied).astype(int),
        FIRST_RESPONSE_IN_HOURS: resp.where(first_turn & timed),
    })
    agg = per.groupby(S.CONVERSATION_ID).agg({
        N_CUSTOMER_MESSAGES: "sum", N_AGENT_MESSAGES: "sum", N_REPLIED: "sum", N_TURNS_TIMED: "sum",
        RESPONSE_S_SUM: "sum", N_SLOW: "sum", N_QUESTIONS: "sum", N_UNANSWERED: "sum",
        FIRST_RESPONSE_IN_HOURS: "max",
    })
    base = conversations[[S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.CUSTOMER_ID, S.NIGHT, S.STARTED_AT,
                          S.N_MESSAGES, PRESALE_INTENT]].rename(columns={PRESALE_INTENT: INQUIRY})
    out = base.merge(agg, left_on=S.CONVERSATION_ID, right_index=True, how="left")
    # An inquiry needs a customer who asked something before any order was placed in the chat.
    out[INQUIRY] = out[INQUIRY].astype(bool) & (out[N_CUSTOMER_MESSAGES].fillna(0) > 0)
    return out[list(STATS_COLUMNS)].reset_index(drop=True)


def assert_same_stats(messages: pd.DataFrame, conv: pd.DataFrame, shops: dict[str, Shop]) -> None:
    pd.testing.assert_frame_equal(conversation_stats(messages, conv, shops, slow_reply_s=60),
                                  reference_conversation_stats(messages, conv, shops, slow_reply_s=60),
                                  check_exact=True)


def test_stats_match_reference(batch: pd.DataFrame, sample_logs_dir: Path, rules_dir: Path) -> None:
    from qa_inspect.config import load_shops
    from qa_inspect.ingest import ingest_paths

    assert_same_stats(batch, build_conversations(batch, SHOPS, PRESALE), SHOPS)
    shops = load_shops(rules_dir)
    m = ingest_paths([sample_logs_dir], rules_dir=rules_dir).messages
    assert_same_stats(m, build_conversations(m, shops, PRESALE), shops)
    # edge cases: no agent reply, bot-only, missing timestamps (also on the agent's reply)
    d = "2026-11-23 "
    rows = msgs("Q", "b1", "a1", [(d + "10:00:00", "customer", "多少钱", False, None, None)])
    rows += msgs("R", "b1", None, [(d + "10:05:00", "bot", "【自动回复】在的", True, None, None)])
    rows += msgs("T", "b2", "a1", [(d + "10:10:00", "customer", "有货吗", False, None, None),
                                   (d + "10:10:30", "agent", "有", False, None, None),
                                   (d + "10:11:00", "customer", "几号发货", False, None, None),
                                   (d + "10:12:00", "agent", "明天", False, None, None)])
    edge = pd.DataFrame(rows)
    edge[S.AGENT_ID] = edge[S.AGENT_ID].astype("string")
    edge.loc[[4, 5], S.TS] = pd.NaT
    assert_same_stats(edge, build_conversations(edge, SHOPS, PRESALE), SHOPS)


def test_stats_match_reference_on_messy_rows() -> None:
    """Rows out of order, several shops and timezones, bots, auto-replies, missing timestamps and
    rows without a conversation id (they count nowhere): positions instead of group-bys, same numbers."""
    rng = np.random.default_rng(8)
    shops = {**SHOPS, "t": Shop(shop_id="t", name="T", platform="shopee", timezone="Asia/Taipei")}
    t0 = pd.Timestamp("2026-11-23 00:30", tz="UTC")
    rows = []
    for c in range(80):
        shop = ["s", "t", "u"][rng.integers(3)]
        for seq in range(int(rng.integers(1, 12))):
            ts = t0 + pd.Timedelta(seconds=int(rng.integers(0, 50000))) if rng.random() > 0.08 else pd.NaT
            rows.append({S.PLATFORM: "tmall", S.SHOP_ID: shop, S.CONVERSATION_ID: f"c{c:02d}", S.SEQ: seq,
                         S.TS: ts, S.ROLE: ["customer", "customer", "agent", "bot", "system"][rng.integers(5)],
                         S.AGENT_ID: "a1", S.CUSTOMER_ID: f"b{c}",
                         S.TEXT: ["多少钱？", "好的", "有货吗", "在的", "怎么退", None][rng.integers(6)],
                         S.SKU: None, S.IS_AUTO_REPLY: [True, False, False, None][rng.integers(4)],
                         S.EVENT: [None, None, "order"][rng.integers(3)], S.AMOUNT: None,
                         S.SOURCE_FILE: "f", S.SOURCE_LINE: seq + 1})
    m = pd.DataFrame(rows).astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.ROLE: "string",
                                   S.TEXT: "string", S.IS_AUTO_REPLY: "boolean", S.EVENT: "string"})
    m[S.TS] = pd.to_datetime(m[S.TS], utc=True)
    m = m.sample(frac=1.0, random_state=1).reset_index(drop=True)
    conv = build_conversations(m, shops, PRESALE)
    assert_same_stats(m, conv, shops)
    m.loc[m.index[:6], S.CONVERSATION_ID] = pd.NA
    assert_same_stats(m, build_conversations(m, shops, PRESALE), shops)
    assert_same_stats(m.iloc[0:0], conv.iloc[0:0], shops)


def test_agent_kpis_with_a_precomputed_attribution_are_the_same(batch: pd.DataFrame) -> None:
    """The nightly run attributes events once and passes the result to both groupings."""
    conv = build_conversations(batch, SHOPS, PRESALE)
    stats = conversation_stats(batch, conv, SHOPS, slow_reply_s=60)
    events = events_frame(batch, SHOPS)
    att = attribute_events(stats, events)
    assert att[CONVERTED].any()  # the batch has a conversion to attribute
    for by in ((S.SHOP_ID, S.AGENT_ID), (S.SHOP_ID,)):
        pd.testing.assert_frame_equal(agent_kpis(stats, events, by=by, attribution=att),
                                      agent_kpis(stats, events, by=by), check_exact=True)


# --- round 4: business hours on numpy wall clocks, the batch isin in Arrow ---------------------
def _ref_in_hours(ts: pd.Series, shop_ids: pd.Series, shops: dict) -> pd.Series:
    """The per-shop Series definition (hour * 60 + minute of the shop-local time)."""
    from zoneinfo import ZoneInfo

    out = pd.Series(False, index=ts.index)
    for sid in shop_ids.dropna().unique():
        sel = (shop_ids == sid) & ts.notna()
        if not sel.any():
            continue
        shop = shops.get(str(sid))
        tz = ZoneInfo(shop.timezone if shop else "Asia/Shanghai")
        start, end = shop.business_hours.minutes() if shop else (0, 24 * 60)
        local = ts[sel].dt.tz_convert(tz)
        minutes = local.dt.hour * 60 + local.dt.minute
        out[sel] = (minutes >= start) & (minutes < end)
    return out


def test_in_hours_matches_the_series_definition() -> None:
    from qa_inspect.config import Shop
    from qa_inspect.kpis import _in_hours

    shops = {"s1": Shop(shop_id="s1", name="一", platform="tmall", timezone="Asia/Shanghai",
                        business_hours={"start": "09:00", "end": "21:30"}),
             "s2": Shop(shop_id="s2", name="二", platform="shopee", timezone="America/New_York",
                        business_hours={"start": "00:30", "end": "23:59"})}
    rng = np.random.default_rng(2)
    n = 2000
    ns = rng.integers(-10**17, 2 * 10**18, size=n)  # 1966..2033, DST changes, pre-1970 included
    ts = pd.Series(pd.to_datetime(ns, utc=True))
    ts[rng.random(n) < 0.1] = pd.NaT
    sid = pd.Series(pd.array(rng.choice(["s1", "s2", "s9", None], size=n).tolist(), dtype="string"))
    # the minutes either side of every opening and closing time
    edges = {"s1": ["2026-11-25 00:59:59", "2026-11-25 01:00:00", "2026-11-25 13:29:59", "2026-11-25 13:30:00"],
             "s2": ["2026-11-25 05:29:59", "2026-11-25 05:30:00", "2026-11-26 04:58:59", "2026-11-26 04:59:00"]}
    ts = pd.concat([ts, pd.Series(pd.to_datetime([t for v in edges.values() for t in v], utc=True))],
                   ignore_index=True)
    sid = pd.concat([sid, pd.Series(pd.array([k for k, v in edges.items() for _ in v], dtype="string"))],
                    ignore_index=True)
    assert _in_hours(ts, sid, shops).tail(8).tolist() == [False, True, True, False] * 2
    for t in (ts, ts.dt.as_unit("s")):
        got = _in_hours(t, sid, shops)
        want = _ref_in_hours(t, sid, shops)
        pd.testing.assert_series_equal(got, want, check_exact=True)
        assert got.any() and not got.all()


def test_isin_matches_series_isin() -> None:
    from qa_inspect.kpis import _isin

    a = pd.Series(["x", None, "y", "z", "x"], dtype="string")
    cases = [pd.Series(["x", "q"], dtype="string"), pd.Series(["y", None], dtype="string"),
             pd.Series([], dtype="string"), pd.Series(["x"], dtype="str"), pd.Series(["x", 1], dtype=object)]
    for values in cases:
        assert _isin(a, values).tolist() == a.isin(values).tolist()
    s = pd.Series(["x", None], dtype="str")
    assert _isin(s, pd.Series([None, "q"], dtype="str")).tolist() == s.isin(pd.Series([None, "q"], dtype="str")).tolist()


def test_question_search_in_arrow_is_the_python_regex() -> None:
    from qa_inspect.kpis import QUESTION_RE, QUESTION_RE2
    from qa_inspect.scoring.conversations import search_rows

    texts = ["好呢", "好呢\n", "好呢\n\n", "呢好", None, "", "几个", "几", "？", "哪里", "呢\r", "呢\n好", "\n呢",
             "🙂呢", "多少", "可以吗", "是否", "ok?"]
    col = pd.Series(texts, dtype="string")
    rows = np.arange(len(texts))
    want = col.fillna("").astype(str).str.contains(QUESTION_RE, regex=True).to_numpy(dtype=bool)
    assert np.array_equal(search_rows(col, rows, QUESTION_RE, QUESTION_RE2), want)
    assert want[1] and not want[2]  # Python's $ matches before one final newline only


# --- session 5: agent KPIs without the merge copies and the per-id hashing ---------------------
def test_left_join_is_the_merge() -> None:
    from qa_inspect.kpis import _left_join

    left = pd.DataFrame({"k": pd.Series(["c", "a", "b"], dtype="string"), "x": [1, 2, 3]})
    cases = {
        "aligned": pd.DataFrame({"k": pd.Series(["c", "a", "b"], dtype="string"), "v": [0.5, 1.5, 2.5],
                                 "f": [True, False, True]}),
        "reordered": pd.DataFrame({"k": pd.Series(["b", "c", "a"], dtype="string"), "v": [0.5, 1.5, 2.5],
                                   "s": pd.Series(["p", None, "r"], dtype="string")}),
        "missing key": pd.DataFrame({"k": pd.Series(["c", "a"], dtype="string"), "f": [True, False]}),
        "duplicate key": pd.DataFrame({"k": pd.Series(["c", "a", "a", "b"], dtype="string"), "v": [1, 2, 3, 4]}),
        "extra keys": pd.DataFrame({"k": pd.Series(["z", "b", "a", "c"], dtype="string"), "v": [9, 8, 7, 6]}),
    }
    for name, right in cases.items():
        want = left.merge(right, on="k", how="left")
        pd.testing.assert_frame_equal(_left_join(left, right, "k"), want, check_exact=True, obj=name)
    na_left = pd.DataFrame({"k": pd.Series(["a", None], dtype="string"), "x": [1, 2]})
    na_right = pd.DataFrame({"k": pd.Series([None, "a"], dtype="string"), "v": [5, 6]})
    pd.testing.assert_frame_equal(_left_join(na_left, na_right, "k"), na_left.merge(na_right, on="k", how="left"))


def test_agent_kpis_count_repeated_conversation_ids_once(batch: pd.DataFrame) -> None:
    """One row per conversation takes the group size; repeated ids still count once (nunique)."""
    conv = build_conversations(batch, SHOPS, PRESALE)
    stats = conversation_stats(batch, conv, SHOPS, slow_reply_s=60)
    events = events_frame(batch, SHOPS)
    by = (S.SHOP_ID, S.AGENT_ID)
    once = agent_kpis(stats, events, by=by)
    named = stats.assign(**{S.AGENT_ID: stats[S.AGENT_ID].fillna("(none)")})
    ref = named.groupby(list(by), dropna=False, sort=True)[S.CONVERSATION_ID].nunique().reset_index(drop=True)
    assert once[CONVERSATIONS].dtype == np.int64
    assert once[CONVERSATIONS].tolist() == ref.tolist()
    twice = pd.concat([stats, stats], ignore_index=True)
    doubled = agent_kpis(twice, events, by=by)
    assert doubled[CONVERSATIONS].tolist() == once[CONVERSATIONS].tolist()
    assert doubled[CONVERSATIONS].dtype == np.int64


def test_attribution_by_position_is_the_id_path() -> None:
    """The unique-id fast path gives the id path's frame, with missing keys, ids, amounts and types."""
    from qa_inspect.kpis import _attribute_by_id, _attribute_by_position

    rng = np.random.default_rng(11)
    t0 = pd.Timestamp("2026-11-23", tz="UTC")
    converted = 0
    for _ in range(60):
        n, k = int(rng.integers(1, 30)), int(rng.integers(0, 50))
        cids = [f"c{i}" for i in rng.permutation(n)]

        def maybe_na(values: np.ndarray, p: float) -> list[object]:
            return [None if rng.random() < p else v for v in values]

        stats = pd.DataFrame({
            S.CONVERSATION_ID: cids, S.SHOP_ID: maybe_na(rng.choice(["s", "t"], n), 0.1),
            S.CUSTOMER_ID: maybe_na(rng.choice(["a", "b", "c"], n), 0.1), S.NIGHT: rng.choice(["N1", "N2"], n),
            S.STARTED_AT: t0 + pd.to_timedelta(rng.integers(0, 6, n), unit="h"),
            INQUIRY: rng.random(n) < 0.6,
        }).astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.CUSTOMER_ID: "string", S.NIGHT: "string"})
        stats.loc[rng.random(n) < 0.1, S.STARTED_AT] = pd.NaT
        ts = pd.Series(t0 + pd.to_timedelta(rng.integers(-1, 7, k), unit="h"))
        ts[rng.random(k) < 0.1] = pd.NaT
        amount = rng.random(k).round(2)
        amount[rng.random(k) < 0.1] = np.nan
        events = pd.DataFrame({
            S.CONVERSATION_ID: maybe_na(rng.choice([*cids, "zz"], k), 0.2),
            S.SHOP_ID: maybe_na(rng.choice(["s", "t"], k), 0.1),
            S.CUSTOMER_ID: maybe_na(rng.choice(["a", "b", "c"], k), 0.1), S.TS: ts,
            S.EVENT: maybe_na(rng.choice(["order", "payment"], k), 0.1), S.AMOUNT: amount,
            S.NIGHT: rng.choice(["N1", "N2"], k),
        }).astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.CUSTOMER_ID: "string",
                   S.NIGHT: "string", S.EVENT: "string"})
        fast = _attribute_by_position(stats, events, pd.Index(stats[S.CONVERSATION_ID]))
        pd.testing.assert_frame_equal(fast, _attribute_by_id(stats, events), check_exact=True)
        pd.testing.assert_frame_equal(attribute_events(stats, events), fast, check_exact=True)
        converted += int(fast[CONVERTED].sum())
    assert converted > 50  # the batches do attribute


def test_attribution_with_a_repeated_conversation_id_takes_the_id_path() -> None:
    from qa_inspect.kpis import _attribute_by_id

    t0 = pd.Timestamp("2026-11-23", tz="UTC")
    stats = pd.DataFrame({S.CONVERSATION_ID: ["c1", "c1", "c2"], S.SHOP_ID: ["s", "s", "s"],
                          S.CUSTOMER_ID: ["a", "a", "b"], S.NIGHT: ["N1", "N1", "N1"],
                          S.STARTED_AT: [t0, t0, t0], INQUIRY: [True, True, True]}).astype(
        {S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.CUSTOMER_ID: "string", S.NIGHT: "string"})
    events = pd.DataFrame({S.CONVERSATION_ID: [None, "c2"], S.SHOP_ID: ["s", "s"], S.CUSTOMER_ID: ["a", "b"],
                           S.TS: [t0 + pd.Timedelta(hours=1)] * 2, S.EVENT: ["payment", "order"],
                           S.AMOUNT: [5.0, 7.0], S.NIGHT: ["N1", "N1"]}).astype(
        {S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.CUSTOMER_ID: "string", S.NIGHT: "string",
         S.EVENT: "string"})
    out = attribute_events(stats, events)
    pd.testing.assert_frame_equal(out, _attribute_by_id(stats, events), check_exact=True)
    assert out[CONVERTED].tolist() == [True, True, True]
    assert out[SALES_AMOUNT].tolist() == [5.0, 5.0, 0.0]


def test_grouped_kpis_are_agent_kpis_per_grouping(batch: pd.DataFrame) -> None:
    """The nightly run joins once and groups twice: the same frames as one agent_kpis call each."""
    from qa_inspect.kpis import grouped_kpis

    conv = build_conversations(batch, SHOPS, PRESALE)
    stats = conversation_stats(batch, conv, SHOPS, slow_reply_s=60)
    events = events_frame(batch, SHOPS)
    att = attribute_events(stats, events)
    groupings = [(S.SHOP_ID, S.AGENT_ID), (S.SHOP_ID,), (S.SHOP_ID, S.CUSTOMER_ID)]
    for got, by in zip(grouped_kpis(stats, events, groupings=groupings, attribution=att), groupings, strict=True):
        pd.testing.assert_frame_equal(got, agent_kpis(stats, events, by=by, attribution=att), check_exact=True)
