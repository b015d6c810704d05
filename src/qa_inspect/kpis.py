"""Service KPIs per agent and per shop (definitions in docs/kpis.md).

Two steps so partitions stay independent: ``conversation_stats`` works on one partition of whole
conversations and returns counts/sums per conversation; ``agent_kpis`` aggregates those rows for
the whole batch and attributes order/payment events, which may sit in another conversation of the
same customer that night.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.scoring.conversations import DEFAULT_TZ, local_date, search_rows, sorted_rows

# per-conversation stats columns
N_CUSTOMER_MESSAGES = "n_customer_messages"
N_AGENT_MESSAGES = "n_agent_messages"
N_REPLIED = "n_replied"  # customer messages followed (later in the chat) by a human agent message
N_TURNS_TIMED = "n_turns_timed"  # customer turns inside business hours that got a timed human reply
RESPONSE_S_SUM = "response_s_sum"
N_SLOW = "n_slow_replies"
N_QUESTIONS = "n_questions"
N_UNANSWERED = "n_unanswered_questions"
FIRST_RESPONSE_IN_HOURS = "first_response_in_hours_s"
INQUIRY = "inquiry"  # pre-sale consultation (see docs/kpis.md)

# aggregated KPI columns
CONVERSATIONS = "conversations"
MESSAGES = "messages"
FIRST_RESPONSE_AVG = "first_response_avg_s"
AVG_RESPONSE = "avg_response_s"
REPLY_RATE = "reply_rate"
INQUIRIES = "inquiries"
CONVERTED = "converted_inquiries"
CONVERSION_RATE = "conversion_rate"  # 询单转化率
SALES_AMOUNT = "sales_amount"  # per conversation: payments attributed to it
ATTRIBUTED_SALES = "attributed_sales"  # aggregated SALES_AMOUNT
SLOW_REPLIES = "slow_replies"
UNANSWERED = "unanswered"
NIGHTS = "nights"
PER_DAY = "consultations_per_day"
MEAN_TOTAL = "mean_total"
N_SCORED = "n_scored"
N_VETO = "n_veto"

QUESTION_RE = re.compile(r"[?？]|吗|呢$|多少|怎么|什么|几[个天号点]|能不能|有没有|可以吗|是不是|是否|哪")
# The same test in RE2 (Arrow): Python's ``$`` also matches before one final newline.
QUESTION_RE2 = r"[?？]|吗|呢\n?\z|多少|怎么|什么|几[个天号点]|能不能|有没有|可以吗|是不是|是否|哪"

STATS_COLUMNS = (S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.CUSTOMER_ID, S.NIGHT, S.STARTED_AT,
                 S.N_MESSAGES, N_CUSTOMER_MESSAGES, N_AGENT_MESSAGES, N_REPLIED, N_TURNS_TIMED,
                 RESPONSE_S_SUM, N_SLOW, N_QUESTIONS, N_UNANSWERED, FIRST_RESPONSE_IN_HOURS, INQUIRY)

# the stats columns attribute_events reads
ATTRIBUTION_COLUMNS = (S.CONVERSATION_ID, S.SHOP_ID, S.CUSTOMER_ID, S.NIGHT, S.STARTED_AT, INQUIRY)


def _in_hours(ts: pd.Series, shop_ids: pd.Series, shops: dict[str, Shop]) -> pd.Series:
    """True where the (UTC) timestamp falls inside the shop's business hours, shop-local.

    Minute of the day = the shop-local wall time floored to minutes, modulo a day (what
    ``hour * 60 + minute`` is), on numpy arrays; shops by codes, not one Series mask each."""
    out = np.zeros(len(ts), dtype=bool)
    codes, uniq = pd.factorize(shop_ids)  # missing shop id: -1, never inside hours
    present = ts.notna().to_numpy(dtype=bool)
    t = pd.Series(ts.array, copy=False)
    for k, sid in enumerate(list(uniq)):
        sel = present & (codes == k)
        if not sel.any():
            continue
        shop = shops.get(str(sid))
        tz = ZoneInfo(shop.timezone if shop else DEFAULT_TZ)
        start, end = shop.business_hours.minutes() if shop else (0, 24 * 60)
        wall = t[sel].dt.tz_convert(tz).dt.tz_localize(None).to_numpy()
        minutes = wall.astype("datetime64[m]").astype(np.int64) % (24 * 60)
        out[sel] = (minutes >= start) & (minutes < end)
    return pd.Series(out, index=ts.index)


def _flag(s: pd.Series) -> np.ndarray:
    return s.fillna(False).to_numpy(dtype=bool)


def conversation_stats(messages: pd.DataFrame, conversations: pd.DataFrame, shops: dict[str, Shop],
                       *, slow_reply_s: float = 60.0) -> pd.DataFrame:
    """Per-conversation counts for the KPIs of one partition.

    Input: messages (MESSAGE_COLUMNS, NORM_TEXT optional) and the partition's conversations
    (from ``scoring.build_conversations``: AGENT_ID, CUSTOMER_ID, NIGHT, STARTED_AT, N_MESSAGES,
    ``presale_intent``). Output: STATS_COLUMNS, one row per conversation. Human agent = role agent
    and not an auto-reply; bots and system rows neither answer nor open a turn.

    Rows are sorted by conversation, so "next/previous human message in the conversation" is a
    running min/max over row positions bounded by the conversation's rows, and the per-row
    sums use integer conversation codes; the regex and business-hours tests run only on the rows
    they can change. tests/test_kpis.py keeps the group-by original as the oracle.
    """
    from qa_inspect.scoring.scorecard import PRESALE_INTENT

    S.require_columns(conversations, (S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.CUSTOMER_ID, S.NIGHT,
                                      S.STARTED_AT, S.N_MESSAGES, PRESALE_INTENT), "kpis")
    text_col = S.NORM_TEXT if S.NORM_TEXT in messages.columns else S.TEXT
    need = list(dict.fromkeys([S.CONVERSATION_ID, S.SEQ, S.ROLE, S.IS_AUTO_REPLY, S.TS, S.SHOP_ID, text_col]))
    m, codes, ids = sorted_rows(messages, need)
    n = len(m)
    # Rows without a conversation id belong to no conversation (a group-by on the id drops them).
    if codes is None:
        codes, ids = pd.factorize(m[S.CONVERSATION_ID], sort=True)
    keyed = codes >= 0
    human = _flag(m[S.ROLE] == "agent") & ~_flag(m[S.IS_AUTO_REPLY].astype("boolean")) & keyed
    cust = _flag(m[S.ROLE] == "customer") & keyed
    pos = np.arange(n)
    new_conv = np.ones(n, dtype=bool)
    new_conv[1:] = codes[1:] != codes[:-1]
    conv_start = np.maximum.accumulate(np.where(new_conv, pos, 0)) if n else pos
    conv_end = (np.minimum.accumulate(np.where(np.append(new_conv[1:], True), pos + 1, n)[::-1])[::-1]
                if n else pos)
    # position of the next human message at/after the row, and of the last one before it
    nh = np.minimum.accumulate(np.where(human, pos, n)[::-1])[::-1] if n else pos
    next_human = np.where(nh < conv_end, nh, -1)
    ph = np.maximum.accumulate(np.where(human, pos, -1)) if n else pos
    prev_human = np.where(ph >= conv_start, ph, -1)
    replied = cust & (next_human >= 0)
    # A turn: the customer messages since the last human message; timed from its first message.
    turn_start = np.zeros(n, dtype=bool)
    ci = np.flatnonzero(cust)
    turn_start[ci] = ~pd.Series(codes[ci].astype(np.int64) * (n + 1) + prev_human[ci] + 1).duplicated().to_numpy()
    ts = m[S.TS]
    # take on the datetime array itself (-1 -> NaT): going through numpy boxes every timestamp
    next_ts = pd.Series(ts.array.take(next_human, allow_fill=True), index=m.index)
    resp = (next_ts - ts).dt.total_seconds()
    timed = turn_start & resp.notna().to_numpy(dtype=bool)
    ti = np.flatnonzero(timed)
    if len(ti):
        timed[ti] = _in_hours(ts.iloc[ti], m[S.SHOP_ID].iloc[ti], shops).to_numpy(dtype=bool)
    question = np.zeros(n, dtype=bool)
    if len(ci):
        question[ci] = search_rows(m[text_col], ci, QUESTION_RE, QUESTION_RE2)
    turns_so_far = np.cumsum(turn_start)
    before_conv = np.where(conv_start > 0, turns_so_far[np.maximum(conv_start - 1, 0)], 0) if n else turns_so_far
    first_turn = turn_start & (turns_so_far - before_conv <= 1)

    k = np.flatnonzero(keyed)
    kc = codes[k]
    # Counts per conversation code with bincount (integers: exact); the float sum goes through
    # pandas' group sum (compensated) and the max through its group max, as before.
    floats = pd.DataFrame({
        RESPONSE_S_SUM: resp.where(timed, 0.0).to_numpy()[k],
        FIRST_RESPONSE_IN_HOURS: resp.where(first_turn & timed).to_numpy()[k],
    }).groupby(kc, sort=True).agg({RESPONSE_S_SUM: "sum", FIRST_RESPONSE_IN_HOURS: "max"})
    present = floats.index.to_numpy()
    n_codes = len(ids)
    slow = timed & (resp > slow_reply_s).to_numpy(dtype=bool)

    def count(flag: np.ndarray) -> np.ndarray:
        return np.bincount(kc[flag[k]], minlength=n_codes)[present].astype(np.int64)

    agg = pd.DataFrame({
        N_CUSTOMER_MESSAGES: count(cust), N_AGENT_MESSAGES: count(human), N_REPLIED: count(replied),
        N_TURNS_TIMED: count(timed), RESPONSE_S_SUM: floats[RESPONSE_S_SUM].to_numpy(),
        N_SLOW: count(slow), N_QUESTIONS: count(question), N_UNANSWERED: count(question & ~replied),
        FIRST_RESPONSE_IN_HOURS: floats[FIRST_RESPONSE_IN_HOURS].to_numpy(),
    }, index=ids[present])
    agg.index.name = S.CONVERSATION_ID
    base = conversations[[S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.CUSTOMER_ID, S.NIGHT, S.STARTED_AT,
                          S.N_MESSAGES, PRESALE_INTENT]].rename(columns={PRESALE_INTENT: INQUIRY})
    out = base.merge(agg, left_on=S.CONVERSATION_ID, right_index=True, how="left")
    # An inquiry needs a customer who asked something before any order was placed in the chat.
    out[INQUIRY] = out[INQUIRY].astype(bool) & (out[N_CUSTOMER_MESSAGES].fillna(0) > 0)
    return out[list(STATS_COLUMNS)].reset_index(drop=True)


def events_frame(messages: pd.DataFrame, shops: dict[str, Shop]) -> pd.DataFrame:
    """The order/payment event rows of a batch with their shop-local night (small: kept whole)."""
    ev = messages.loc[messages[S.EVENT].isin(["order", "payment"]),
                      [S.CONVERSATION_ID, S.SHOP_ID, S.CUSTOMER_ID, S.TS, S.EVENT, S.AMOUNT]].copy()
    ev[S.NIGHT] = local_date(ev[S.TS], ev[S.SHOP_ID], shops)
    return ev.reset_index(drop=True)


def attribute_events(stats: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per conversation: converted (bool) and attributed sales amount.

    An event belongs to the conversation it occurs in; an event outside any chat goes to the
    latest inquiry conversation of the same shop + customer on the same night that started at
    or before it. Conversion counts orders or payments; the sales amount counts payments only.
    Vectorised (group ids + ``merge_asof``) because it runs on the whole batch in the client
    process; tests/test_kpis.py checks it against the original per-event loop.
    """
    st = stats[list(ATTRIBUTION_COLUMNS)]
    ids = st[S.CONVERSATION_ID]
    if len(st) and not ids.isna().any():
        index = pd.Index(ids)
        if index.is_unique:
            return _attribute_by_position(st, events, index)
    return _attribute_by_id(st, events)


def _attribute_by_id(st: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """attribute_events with owners as conversation ids: stats whose ids repeat or are missing."""
    n = len(events)
    ev_cid = events[S.CONVERSATION_ID].to_numpy(dtype=object)
    in_stats = _isin(events[S.CONVERSATION_ID], st[S.CONVERSATION_ID])
    inq = st[st[INQUIRY]]
    inq_g, ev_g = _key_groups(inq, events)
    # the event sits in an inquiry conversation of its own key: it stays there
    pairs = pd.DataFrame({"c": inq[S.CONVERSATION_ID].to_numpy(dtype=object), "g": inq_g}).drop_duplicates()
    hit = pd.DataFrame({"c": ev_cid, "g": ev_g, "i": np.arange(n)}).merge(pairs, on=["c", "g"], how="inner")
    own = np.zeros(n, dtype=bool)
    own[hit["i"].to_numpy(dtype=np.int64)] = True
    owner = np.where(own | in_stats, ev_cid, None).astype(object)
    rows, found = _latest_inquiry(inq, inq_g, events, ev_g, own, inq[S.CONVERSATION_ID].to_numpy(dtype=object))
    owner[rows] = found
    ev = events.assign(_owner=owner)
    conv_flag = ev.dropna(subset=["_owner"]).groupby("_owner").size().gt(0)
    sales = ev[ev[S.EVENT] == "payment"].dropna(subset=["_owner"]).groupby("_owner")[S.AMOUNT].sum()
    out = st[[S.CONVERSATION_ID, INQUIRY]].copy()
    out[CONVERTED] = out[S.CONVERSATION_ID].map(conv_flag).fillna(False).astype(bool) & out[INQUIRY]
    out[SALES_AMOUNT] = out[S.CONVERSATION_ID].map(sales).fillna(0.0).astype(float)
    return out[[S.CONVERSATION_ID, CONVERTED, SALES_AMOUNT]]


def _key_groups(inq: pd.DataFrame, events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One id per (shop, customer, night) across inquiries and events; a missing value is a key of its own."""
    keys = [S.SHOP_ID, S.CUSTOMER_ID, S.NIGHT]
    both = pd.concat([inq[keys], events[keys]], ignore_index=True)
    gid = both.groupby(keys, dropna=False, sort=False).ngroup().to_numpy(dtype=np.int64)
    return gid[:len(inq)], gid[len(inq):]


def _latest_inquiry(inq: pd.DataFrame, inq_g: np.ndarray, events: pd.DataFrame, ev_g: np.ndarray,
                    own: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(event rows, their new owners): an event that is not in an inquiry of its own key goes to the
    latest inquiry of its key that started at or before it (``owners``: one value per inquiry)."""
    ts = events[S.TS]
    need = ~own & np.isin(ev_g, inq_g) & ts.notna().to_numpy(dtype=bool)
    if not need.any():
        return np.zeros(0, dtype=np.int64), owners[:0]
    started = inq[S.STARTED_AT]
    if started.dtype != ts.dtype:
        started = started.astype(ts.dtype)
    ok = started.notna().to_numpy(dtype=bool)
    # stable sort keeps the batch order among equal start times; merge_asof takes the last of them
    right = pd.DataFrame({"g": inq_g[ok], "t": started.array[ok], "o": np.flatnonzero(ok)}).sort_values(
        "t", kind="stable")
    left = pd.DataFrame({"g": ev_g[need], "t": ts.array[need], "i": np.flatnonzero(need)}).sort_values(
        "t", kind="stable")
    found = pd.merge_asof(left, right, on="t", by="g", direction="backward", allow_exact_matches=True)
    found = found[found["o"].notna()]
    values = owners[found["o"].to_numpy(dtype=np.int64)]
    keep = ~pd.isna(values)  # an inquiry without an id owns nothing
    return found["i"].to_numpy(dtype=np.int64)[keep], values[keep]


def _attribute_by_position(st: pd.DataFrame, events: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """attribute_events when every conversation id occurs once: owners are row positions in the
    stats instead of id strings, so no Python string per id, no (id, key) merge and no map back
    (the id hashing of those cost ~250 MB at 5M messages). The same owners, the same per-owner
    sums (pandas' groupby sum over the events in their order) and the same frame."""
    n = len(events)
    ev_pos = index.get_indexer(events[S.CONVERSATION_ID]) if n else np.zeros(0, dtype=np.int64)
    in_stats = ev_pos >= 0
    is_inq = st[INQUIRY].to_numpy(dtype=bool)
    inq_idx = np.flatnonzero(is_inq)
    inq = st.iloc[inq_idx]
    inq_g, ev_g = _key_groups(inq, events)
    # the event sits in an inquiry conversation of its own key: it stays there
    g_at = np.full(len(st), -1, dtype=np.int64)
    g_at[inq_idx] = inq_g
    safe = np.where(in_stats, ev_pos, 0)
    own = in_stats & is_inq[safe] & (g_at[safe] == ev_g)
    owner = np.where(in_stats, ev_pos, -1)
    rows, found = _latest_inquiry(inq, inq_g, events, ev_g, own, inq_idx)
    owner[rows] = found
    has_owner = owner >= 0
    converted = np.zeros(len(st), dtype=bool)
    converted[owner[has_owner]] = True
    pay = has_owner & (events[S.EVENT] == "payment").fillna(False).to_numpy(dtype=bool)
    sales = np.zeros(len(st), dtype=np.float64)
    if pay.any():
        sums = events[S.AMOUNT][pay].groupby(owner[pay]).sum()
        sales[sums.index.to_numpy(dtype=np.int64)] = sums.to_numpy(dtype=np.float64)
    out = st[[S.CONVERSATION_ID, INQUIRY]].copy()
    out[CONVERTED] = pd.Series(converted, index=out.index) & out[INQUIRY]
    out[SALES_AMOUNT] = sales
    return out[[S.CONVERSATION_ID, CONVERTED, SALES_AMOUNT]]


def _left_join(left: pd.DataFrame, right: pd.DataFrame, on: str) -> pd.DataFrame:
    """``left.merge(right, on=on, how="left")``. When every left key is present and finds exactly
    one right row (the run's stats, attribution and scores: one row per conversation), the right
    columns are taken by position onto a shallow copy of ``left``: the same frame as the merge's,
    without the merge's copy of every column (~70 MB at 5M messages). Otherwise the merge itself."""
    keys = pd.Index(right[on])
    if keys.is_unique and not left[on].isna().any():
        pos = keys.get_indexer(left[on])
        if len(pos) == 0 or pos.min() >= 0:
            out = left.copy(deep=False)
            for c in right.columns:
                if c != on:
                    out[c] = right[c].take(pos).set_axis(out.index)
            return out.reset_index(drop=True)
    return left.merge(right, on=on, how="left")


def _isin(s: pd.Series, values: pd.Series) -> np.ndarray:
    """``s.isin(values)`` as a bool array. For two Arrow string columns of one type this is
    pandas' own ``pc.is_in`` with the values' Arrow array as the value set, instead of one
    Python scalar per value (a batch's conversation ids); a missing value matches a missing
    value there as in pandas (skip_nulls off). Other dtypes: ``Series.isin``."""
    a, v = s.dtype, values.dtype
    if (isinstance(a, pd.StringDtype) and a == v and a.storage == "pyarrow"
            and len(values) and len(s)):
        import pyarrow as pa
        import pyarrow.compute as pc

        value_set = pa.array(values.array)
        if isinstance(value_set, pa.ChunkedArray):
            value_set = value_set.combine_chunks()
        return np.array(pc.is_in(pa.array(s.array), value_set=value_set), dtype=np.bool_)
    return s.isin(values).to_numpy(dtype=bool)


def agent_kpis(stats: pd.DataFrame, events: pd.DataFrame, *, by: Sequence[str] = (S.SHOP_ID, S.AGENT_ID),
               scores: pd.DataFrame | None = None, attribution: pd.DataFrame | None = None) -> pd.DataFrame:
    """Aggregate per-conversation stats to KPIs grouped ``by`` (agent, shop, and/or NIGHT).

    ``scores`` (optional, CONVERSATION_ID + TOTAL + VETO) adds mean_total, n_scored, n_veto.
    Rates are ratios of sums (not means of per-conversation rates), so they combine correctly.
    ``attribution``: ``attribute_events(stats, events)`` when the caller has it already.
    """
    return grouped_kpis(stats, events, groupings=[by], scores=scores, attribution=attribution)[0]


def grouped_kpis(stats: pd.DataFrame, events: pd.DataFrame, *, groupings: Sequence[Sequence[str]],
                 scores: pd.DataFrame | None = None, attribution: pd.DataFrame | None = None) -> list[pd.DataFrame]:
    """:func:`agent_kpis` for several groupings (the nightly run: by agent and by shop), with the
    attribution, the joins and the id check done once for all of them."""
    att = attribute_events(stats, events) if attribution is None else attribution
    # the joins copy the columns they keep: leave out the ones no KPI reads (customer id and start
    # time were ~50 MB of the two copies at 5M messages, the run's peak)
    unused = [c for c in (S.CUSTOMER_ID, S.STARTED_AT) if c in stats.columns and all(c not in b for b in groupings)]
    df = _left_join(stats.drop(columns=unused), att, S.CONVERSATION_ID)
    if scores is not None and len(scores):
        df = _left_join(df, scores[[S.CONVERSATION_ID, S.TOTAL, S.VETO]], S.CONVERSATION_ID)
    else:
        df[S.TOTAL] = np.nan
        df[S.VETO] = False
    df[S.AGENT_ID] = df[S.AGENT_ID].fillna("(none)")
    # one row per conversation (the run's stats): the distinct count is the group's size. nunique
    # hashes every id as a Python string (+107 MB for 344k conversations, the 5M-message peak)
    ids = df[S.CONVERSATION_ID]
    once = not ids.isna().any() and pd.Index(ids).is_unique
    return [_aggregate(df, list(by), once) for by in groupings]


def _aggregate(df: pd.DataFrame, by: list[str], once: bool) -> pd.DataFrame:
    g = df.groupby(by, dropna=False, sort=True)
    out = g.agg(**{
        CONVERSATIONS: (S.CONVERSATION_ID, "size" if once else "nunique"),
        MESSAGES: (S.N_MESSAGES, "sum"),
        N_CUSTOMER_MESSAGES: (N_CUSTOMER_MESSAGES, "sum"),
        N_AGENT_MESSAGES: (N_AGENT_MESSAGES, "sum"),
        N_REPLIED: (N_REPLIED, "sum"),
        N_TURNS_TIMED: (N_TURNS_TIMED, "sum"),
        RESPONSE_S_SUM: (RESPONSE_S_SUM, "sum"),
        FIRST_RESPONSE_AVG: (FIRST_RESPONSE_IN_HOURS, "mean"),
        SLOW_REPLIES: (N_SLOW, "sum"),
        N_QUESTIONS: (N_QUESTIONS, "sum"),
        UNANSWERED: (N_UNANSWERED, "sum"),
        INQUIRIES: (INQUIRY, "sum"),
        CONVERTED: (CONVERTED, "sum"),
        ATTRIBUTED_SALES: (SALES_AMOUNT, "sum"),
        NIGHTS: (S.NIGHT, "nunique"),
        MEAN_TOTAL: (S.TOTAL, "mean"),
        N_SCORED: (S.TOTAL, "count"),
        N_VETO: (S.VETO, "sum"),
    }).reset_index()
    if once:
        out[CONVERSATIONS] = out[CONVERSATIONS].astype("int64")  # as nunique's (size is Int64 here)
    out[AVG_RESPONSE] = out[RESPONSE_S_SUM] / out[N_TURNS_TIMED].where(out[N_TURNS_TIMED] > 0)
    out[REPLY_RATE] = out[N_REPLIED] / out[N_CUSTOMER_MESSAGES].where(out[N_CUSTOMER_MESSAGES] > 0)
    out[CONVERSION_RATE] = out[CONVERTED] / out[INQUIRIES].where(out[INQUIRIES] > 0)
    out[PER_DAY] = out[CONVERSATIONS] / out[NIGHTS].where(out[NIGHTS] > 0)
    cols = [*by, CONVERSATIONS, MESSAGES, N_CUSTOMER_MESSAGES, N_AGENT_MESSAGES, FIRST_RESPONSE_AVG,
            AVG_RESPONSE, REPLY_RATE, SLOW_REPLIES, N_QUESTIONS, UNANSWERED, INQUIRIES, CONVERTED,
            CONVERSION_RATE, ATTRIBUTED_SALES, NIGHTS, PER_DAY, MEAN_TOTAL, N_SCORED, N_VETO,
            N_REPLIED, N_TURNS_TIMED, RESPONSE_S_SUM]
    return out[cols]
