"""One row per conversation: who, when, how long, and the flags the scorecard needs for N/A."""

from __future__ import annotations

import re
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.scoring.scorecard import N_AGENT_MESSAGES, PRESALE_INTENT, TIMED

DEFAULT_TZ = "Asia/Shanghai"


def presale_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    ws = sorted({w for w in words if w}, key=len, reverse=True)
    return re.compile("|".join(re.escape(w) for w in ws)) if ws else None


def _flag(s: pd.Series) -> np.ndarray:
    return s.fillna(False).to_numpy(dtype=bool)


def build_conversations(messages: pd.DataFrame, shops: dict[str, Shop],
                        presale_words: Iterable[str]) -> pd.DataFrame:
    """Summarise messages (schema.MESSAGE_COLUMNS, NORM_TEXT optional) per conversation.

    Returns CONVERSATION_ID, SHOP_ID, PLATFORM, AGENT_ID (the human agent with most messages),
    CUSTOMER_ID, NIGHT (shop-local date of the first message), STARTED_AT, ENDED_AT, N_MESSAGES,
    FIRST_RESPONSE_S (first human agent reply after the first customer message; auto-replies and
    bots excluded), RISK (NaN until the risk model fills it), PRESALE_INTENT, TIMED,
    N_AGENT_MESSAGES. Every conversation in ``messages`` gets exactly one row, in conversation id order.

    Conversations are factorised once and every summary is a reduction over those integer codes
    (not one string group-by per column); tests/scoring/reference_conversations.py is the
    group-by definition it matches. A missing conversation id is a conversation of its own (last).
    """
    S.require_columns(messages, (S.CONVERSATION_ID, S.SHOP_ID, S.PLATFORM, S.SEQ, S.TS, S.ROLE, S.AGENT_ID,
                                 S.CUSTOMER_ID, S.TEXT, S.IS_AUTO_REPLY, S.EVENT), "conversations")
    cols = [S.CONVERSATION_ID, S.SHOP_ID, S.PLATFORM, S.AGENT_ID, S.CUSTOMER_ID, S.NIGHT, S.STARTED_AT,
            S.ENDED_AT, S.N_MESSAGES, S.FIRST_RESPONSE_S, S.RISK, PRESALE_INTENT, TIMED, N_AGENT_MESSAGES]
    if messages.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    text_col = S.NORM_TEXT if S.NORM_TEXT in messages.columns else S.TEXT
    need = list(dict.fromkeys([S.CONVERSATION_ID, S.SEQ, S.SHOP_ID, S.PLATFORM, S.TS, S.ROLE, S.AGENT_ID,
                               S.CUSTOMER_ID, S.IS_AUTO_REPLY, S.EVENT, text_col]))
    m = messages[need].sort_values([S.CONVERSATION_ID, S.SEQ], kind="stable").reset_index(drop=True)
    codes, ids = pd.factorize(m[S.CONVERSATION_ID], sort=True, use_na_sentinel=False)
    n = len(ids)
    groups = pd.RangeIndex(n)
    # Rows of a missing conversation id: a group of their own for the first/min/max/size summaries
    # but left out of the others (a group-by on the id column drops them: 0 / missing / False).
    keyed = ~m[S.CONVERSATION_ID].isna().to_numpy(dtype=bool)
    out: dict[str, object] = {S.CONVERSATION_ID: ids}
    for col in (S.SHOP_ID, S.PLATFORM):
        out[col] = m[col].groupby(codes, sort=True).first().reindex(groups).array
    ts = m[S.TS]
    by_code = ts.groupby(codes, sort=True)
    out[S.STARTED_AT] = by_code.min().reindex(groups).array
    out[S.ENDED_AT] = by_code.max().reindex(groups).array
    out[S.N_MESSAGES] = np.bincount(codes, minlength=n).astype("int64")

    human = (_flag(m[S.ROLE] == "agent") & ~_flag(m[S.IS_AUTO_REPLY].astype("boolean"))) & keyed
    out[N_AGENT_MESSAGES] = np.bincount(codes[human], minlength=n).astype("int64")
    # The serving agent: most messages among human agent rows (ties: the smallest id), else any
    # agent_id on the rows.
    agent = m[S.AGENT_ID]
    has_agent = agent.notna().to_numpy(dtype=bool) & keyed
    sel = human & has_agent
    ha = pd.DataFrame({"c": codes[sel], S.AGENT_ID: agent[sel].array})
    top = (ha.groupby(["c", S.AGENT_ID]).size().rename("n").reset_index()
           .sort_values(["c", "n"], ascending=[True, False], kind="stable")
           .drop_duplicates("c").set_index("c")[S.AGENT_ID])
    any_agent = agent[has_agent].groupby(codes[has_agent]).first()
    out[S.AGENT_ID] = top.reindex(groups).fillna(any_agent.reindex(groups)).array
    has_cust_id = m[S.CUSTOMER_ID].notna().to_numpy(dtype=bool) & keyed
    out[S.CUSTOMER_ID] = (m[S.CUSTOMER_ID][has_cust_id].groupby(codes[has_cust_id]).first()
                          .reindex(groups).array)

    # First response: first human agent message after the first customer message.
    is_cust = _flag(m[S.ROLE] == "customer") & keyed
    first_cust = ts[is_cust].groupby(codes[is_cust]).min().reindex(groups)
    fc = first_cust.array.take(codes)
    after = human & np.asarray(ts.array >= fc, dtype=bool)
    first_reply = ts[after].groupby(codes[after]).min().reindex(groups)
    out[S.FIRST_RESPONSE_S] = (first_reply - first_cust).dt.total_seconds().astype("float64").to_numpy()
    timed = np.bincount(codes[ts.notna().to_numpy(dtype=bool) & keyed], minlength=n) > 0
    timed[np.unique(codes[~keyed])] = True  # as the group-by's missing row cast to bool
    out[TIMED] = timed

    # Pre-sale intent: a customer message with an intent word, or an order/payment event.
    pat = presale_pattern(presale_words)
    hit = m[S.EVENT].isin(["order", "payment"]).to_numpy(dtype=bool, copy=True)
    if pat is not None and is_cust.any():
        ctext = m[text_col][is_cust].fillna("").astype(str)
        hit[is_cust] |= ctext.str.contains(pat, regex=True).to_numpy(dtype=bool)
    out[PRESALE_INTENT] = np.bincount(codes[hit & keyed], minlength=n) > 0

    started = pd.Series(out[S.STARTED_AT])
    out[S.NIGHT] = local_date(started, pd.Series(out[S.SHOP_ID]), shops).array
    out[S.RISK] = np.full(n, np.nan)
    return pd.DataFrame(out, columns=cols)


def _night(ts: object, shop: Shop | None) -> str | None:
    if ts is None or pd.isna(ts):
        return None
    tz = ZoneInfo(shop.timezone if shop else DEFAULT_TZ)
    return pd.Timestamp(ts).tz_convert(tz).strftime("%Y-%m-%d")


def local_date(ts: pd.Series, shop_ids: pd.Series, shops: dict[str, Shop]) -> pd.Series:
    """Shop-local business date (YYYY-MM-DD) of UTC timestamps; None where ts is NaT.

    One timezone conversion per shop, not per value (tests/scoring/reference_conversations.py
    has the per-value definition)."""
    keys = np.asarray([str(s) for s in shop_ids.tolist()], dtype=object)
    values = np.full(len(ts), None, dtype=object)
    t = pd.Series(ts.array, copy=False)
    present = t.notna().to_numpy(dtype=bool)
    for key in dict.fromkeys(keys[present].tolist()):
        sel = present & (keys == key)
        shop = shops.get(key)
        local = t[sel].dt.tz_convert(ZoneInfo(shop.timezone if shop else DEFAULT_TZ))
        values[sel] = local.dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
    return pd.Series(values, index=ts.index, dtype="string")
