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


def re2_literals(words: Iterable[str]) -> str | None:
    """``presale_pattern``'s alternation for Arrow's RE2 when every word is plain (``re.escape``
    leaves it alone: letters, digits, CJK), where RE2 and Python's ``re`` find the same
    literals; None otherwise (the caller then runs Python's regex)."""
    ws = sorted({w for w in words if w}, key=len, reverse=True)
    if not ws or any(re.escape(w) != w for w in ws):
        return None
    return "|".join(ws)


def search_rows(col: pd.Series, rows: np.ndarray, pattern: re.Pattern[str], re2: str | None) -> np.ndarray:
    """``col.iloc[rows].fillna("").astype(str).str.contains(pattern)`` as a bool array.

    On an Arrow string column with an RE2 form of the pattern (same matches: see the callers)
    the search runs in Arrow over the selected rows, not one Python ``re.search`` per text."""
    if re2 is not None and isinstance(col.dtype, pd.StringDtype) and col.dtype.storage == "pyarrow":
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = pa.array(col.array)
        picked = arr.take(pa.array(rows, type=pa.int64())).fill_null("")
        return np.asarray(pc.match_substring_regex(picked, re2).to_numpy(zero_copy_only=False), dtype=bool)
    text = col.iloc[rows].fillna("").astype(str)
    return text.str.contains(pattern, regex=True).to_numpy(dtype=bool)


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
    m, codes, ids = sorted_rows(messages, need)
    if codes is None:
        codes, ids = pd.factorize(m[S.CONVERSATION_ID], sort=True, use_na_sentinel=False)
    n = len(ids)
    groups = pd.RangeIndex(n)
    # Rows of a missing conversation id: a group of their own for the first/min/max/size summaries
    # but left out of the others (a group-by on the id column drops them: 0 / missing / False).
    keyed = ~m[S.CONVERSATION_ID].isna().to_numpy(dtype=bool)
    out: dict[str, object] = {S.CONVERSATION_ID: ids}
    for col in (S.SHOP_ID, S.PLATFORM):
        out[col] = _group_first(m[col], codes, n)
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
    top = _top_agent(codes[sel], agent[sel])
    any_agent = pd.Series(_group_first(agent, np.where(keyed, codes, -1), n), index=groups)
    out[S.AGENT_ID] = top.reindex(groups).fillna(any_agent).array
    out[S.CUSTOMER_ID] = _group_first(m[S.CUSTOMER_ID], np.where(keyed, codes, -1), n)

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
        hit[is_cust] |= search_rows(m[text_col], np.flatnonzero(is_cust), pat, re2_literals(presale_words))
    out[PRESALE_INTENT] = np.bincount(codes[hit & keyed], minlength=n) > 0

    started = pd.Series(out[S.STARTED_AT])
    out[S.NIGHT] = local_date(started, pd.Series(out[S.SHOP_ID]), shops).array
    out[S.RISK] = np.full(n, np.nan)
    return pd.DataFrame(out, columns=cols)


def _group_first(values: pd.Series, codes: np.ndarray, n: int) -> object:
    """``values.groupby(codes).first().reindex(range(n)).array``: per code, its first non-missing
    value in row order (missing where none), from the first position of each code among the
    non-missing rows. A negative code belongs to no group."""
    ok = values.notna().to_numpy(dtype=bool) & (codes >= 0)
    rows = np.flatnonzero(ok)
    present, first = np.unique(codes[rows], return_index=True)
    at = np.full(n, -1, dtype=np.intp)
    at[present] = rows[first]
    return values.array.take(at, allow_fill=True)


def _top_agent(c: np.ndarray, agent: pd.Series) -> pd.Series:
    """Per conversation code, the agent id with most rows, ties to the smallest id in sorted
    order: the group-by (code, agent) size sorted by code and count descending, first per code,
    as integer keys. Sorted factorisation orders the ids as that group-by sorts them."""
    if not len(c):
        return pd.Series(agent.array[:0], index=pd.Index(np.zeros(0, dtype=np.int64)))
    a, uniq = pd.factorize(agent, sort=True)
    n_a = max(len(uniq), 1)
    keys, first, counts = np.unique(c.astype(np.int64) * n_a + a, return_index=True, return_counts=True)
    key_c = keys // n_a
    best = np.lexsort((-counts, key_c))  # by code, then most rows; keys are already ascending
    take = best[np.concatenate([[True], key_c[best][1:] != key_c[best][:-1]])]
    return pd.Series(agent.array.take(first[take]), index=pd.Index(key_c[take]))


def sorted_rows(messages: pd.DataFrame, need: list[str]) -> tuple[pd.DataFrame, np.ndarray | None, object]:
    """``messages[need]`` sorted by (conversation id, seq), stable, with a fresh RangeIndex.

    Partitions arrive sorted (the architecture contract), and the stable sort then moves no
    row but still copies every column (string columns through Arrow take). When the sorted
    factorisation of the ids is non-decreasing and seq non-decreasing within each id, the stable
    sort is the identity, so the rows are used as they are; the codes and ids of that
    factorisation (no missing id: every code >= 0) come back too. Otherwise it sorts, codes None.
    """
    cid = messages[S.CONVERSATION_ID]
    seq = messages[S.SEQ]
    sub = messages[need]
    if len(messages) > 1 and pd.api.types.is_integer_dtype(seq.dtype) and not cid.hasnans:
        codes, ids = pd.factorize(cid, sort=True)
        c = codes.astype(np.int64, copy=False)
        s = seq.to_numpy(dtype=np.int64)
        step = np.diff(c)
        if (step >= 0).all() and (np.diff(s)[step == 0] >= 0).all():
            return sub.reset_index(drop=True), codes, ids
    return sub.sort_values([S.CONVERSATION_ID, S.SEQ], kind="stable").reset_index(drop=True), None, None


def _night(ts: object, shop: Shop | None) -> str | None:
    if ts is None or pd.isna(ts):
        return None
    tz = ZoneInfo(shop.timezone if shop else DEFAULT_TZ)
    return pd.Timestamp(ts).tz_convert(tz).strftime("%Y-%m-%d")


def local_date(ts: pd.Series, shop_ids: pd.Series, shops: dict[str, Shop]) -> pd.Series:
    """Shop-local business date (YYYY-MM-DD) of UTC timestamps; None where ts is NaT.

    One timezone conversion per shop, not per value (tests/scoring/reference_conversations.py
    has the per-value definition)."""
    # the str() of each distinct shop id, then codes of those strings (two ids, one str: one key)
    sid_codes, sid_uniq = pd.factorize(shop_ids, use_na_sentinel=False)
    key_codes, key_names = pd.factorize(np.asarray([str(s) for s in list(sid_uniq)], dtype=object))
    kc = key_codes[sid_codes] if len(sid_codes) else np.zeros(0, dtype=np.intp)
    values = np.full(len(ts), None, dtype=object)
    t = pd.Series(ts.array, copy=False)
    present = t.notna().to_numpy(dtype=bool)
    for code in dict.fromkeys(kc[present].tolist()):
        sel = present & (kc == code)
        shop = shops.get(key_names[code])
        local = t[sel].dt.tz_convert(ZoneInfo(shop.timezone if shop else DEFAULT_TZ))
        values[sel] = _ymd(local)
    return pd.Series(values, index=ts.index, dtype="string")


_DAY_MIN, _DAY_MAX = np.datetime64("1000-01-01", "D"), np.datetime64("9999-12-31", "D")


def _ymd(local: pd.Series) -> np.ndarray:
    """``local.dt.strftime("%Y-%m-%d")`` (no NaT) as objects: each distinct wall-clock day is
    formatted once (a night's messages fall on a handful of days) instead of every value.
    Wall time floored to the day is the date strftime prints; years outside 1000..9999
    (never with nanoseconds) keep strftime's own (unpadded) form."""
    days = local.dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    uniq, inv = np.unique(days, return_inverse=True)
    if len(uniq) and (uniq[0] < _DAY_MIN or uniq[-1] > _DAY_MAX):
        return local.dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
    return np.asarray(np.datetime_as_string(uniq, unit="D"), dtype=object)[inv.reshape(-1)]
