"""Straightforward (slow) reference of ``build_conversations`` and ``local_date`` for the
equivalence test: one pandas group-by per column and one timezone conversion per conversation,
as first written. The production version works on group positions; this is the definition."""

from __future__ import annotations

from collections.abc import Iterable
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.scoring.conversations import DEFAULT_TZ, presale_pattern
from qa_inspect.scoring.scorecard import N_AGENT_MESSAGES, PRESALE_INTENT, TIMED


def _human_agent_mask(m: pd.DataFrame) -> pd.Series:
    auto = m[S.IS_AUTO_REPLY].fillna(False).astype(bool)
    return (m[S.ROLE] == "agent") & ~auto


def ref_build_conversations(messages: pd.DataFrame, shops: dict[str, Shop],
                            presale_words: Iterable[str]) -> pd.DataFrame:
    cols = [S.CONVERSATION_ID, S.SHOP_ID, S.PLATFORM, S.AGENT_ID, S.CUSTOMER_ID, S.NIGHT, S.STARTED_AT,
            S.ENDED_AT, S.N_MESSAGES, S.FIRST_RESPONSE_S, S.RISK, PRESALE_INTENT, TIMED, N_AGENT_MESSAGES]
    if messages.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    m = messages.sort_values([S.CONVERSATION_ID, S.SEQ], kind="stable")
    g = m.groupby(S.CONVERSATION_ID, sort=True, dropna=False)
    out = g.agg(**{
        S.SHOP_ID: (S.SHOP_ID, "first"),
        S.PLATFORM: (S.PLATFORM, "first"),
        S.STARTED_AT: (S.TS, "min"),
        S.ENDED_AT: (S.TS, "max"),
        S.N_MESSAGES: (S.SEQ, "size"),
    })
    human = _human_agent_mask(m)
    out[N_AGENT_MESSAGES] = human.groupby(m[S.CONVERSATION_ID]).sum().reindex(out.index).fillna(0).astype("int64")
    ha = m.loc[human & m[S.AGENT_ID].notna(), [S.CONVERSATION_ID, S.AGENT_ID]]
    top = (ha.groupby([S.CONVERSATION_ID, S.AGENT_ID]).size().rename("n").reset_index()
           .sort_values([S.CONVERSATION_ID, "n"], ascending=[True, False], kind="stable")
           .drop_duplicates(S.CONVERSATION_ID).set_index(S.CONVERSATION_ID)[S.AGENT_ID])
    any_agent = m.loc[m[S.AGENT_ID].notna()].groupby(S.CONVERSATION_ID)[S.AGENT_ID].first()
    out[S.AGENT_ID] = top.reindex(out.index).fillna(any_agent.reindex(out.index))
    cust = m.loc[m[S.CUSTOMER_ID].notna()].groupby(S.CONVERSATION_ID)[S.CUSTOMER_ID].first()
    out[S.CUSTOMER_ID] = cust.reindex(out.index)
    is_cust = m[S.ROLE] == "customer"
    first_cust = m.loc[is_cust].groupby(S.CONVERSATION_ID)[S.TS].min()
    fc = m[S.CONVERSATION_ID].map(first_cust)
    after = human & (m[S.TS] >= fc)
    first_reply = m.loc[after].groupby(S.CONVERSATION_ID)[S.TS].min()
    delta = (first_reply.reindex(out.index) - first_cust.reindex(out.index)).dt.total_seconds()
    out[S.FIRST_RESPONSE_S] = delta.astype("float64")
    out[TIMED] = m[S.TS].notna().groupby(m[S.CONVERSATION_ID]).any().reindex(out.index).astype(bool)
    text = m[S.NORM_TEXT] if S.NORM_TEXT in m.columns else m[S.TEXT]
    pat = presale_pattern(presale_words)
    if pat is not None:
        hit = is_cust & text.fillna("").astype(str).str.contains(pat, regex=True)
    else:
        hit = pd.Series(False, index=m.index)
    hit = hit | m[S.EVENT].isin(["order", "payment"])
    out[PRESALE_INTENT] = hit.groupby(m[S.CONVERSATION_ID]).any().reindex(out.index).fillna(False).astype(bool)
    out[S.NIGHT] = [_night(ts, shops.get(str(sid))) for ts, sid in zip(out[S.STARTED_AT], out[S.SHOP_ID],
                                                                          strict=True)]
    out[S.NIGHT] = out[S.NIGHT].astype("string")
    out[S.RISK] = np.nan
    out = out.reset_index()
    return out[cols]


def _night(ts: object, shop: Shop | None) -> str | None:
    if ts is None or pd.isna(ts):
        return None
    tz = ZoneInfo(shop.timezone if shop else DEFAULT_TZ)
    return pd.Timestamp(ts).tz_convert(tz).strftime("%Y-%m-%d")


def ref_local_date(ts: pd.Series, shop_ids: pd.Series, shops: dict[str, Shop]) -> pd.Series:
    return pd.Series([_night(t, shops.get(str(s))) for t, s in zip(ts, shop_ids, strict=True)],
                     index=ts.index, dtype="string")
