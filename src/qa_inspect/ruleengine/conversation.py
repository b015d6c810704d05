"""A light per-conversation view of a partition, built once and shared by all rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from qa_inspect import schema
from qa_inspect.columns import coded_strings

NEEDED = (schema.CONVERSATION_ID, schema.SHOP_ID, schema.PLATFORM, schema.SEQ, schema.ROLE,
          schema.TEXT, schema.NORM_TEXT, schema.TOKENS, schema.TS, schema.IS_AUTO_REPLY,
          schema.EVENT, schema.AGENT_ID)


def _str(v: Any) -> str | None:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return str(v)


def main_agent(agent_id: list[str | None], human_agent: list[int]) -> str | None:
    """The conversation's agent: the most frequent id among human replies (else among all
    messages), the first seen on a tie."""
    ids = [agent_id[i] for i in human_agent if agent_id[i]]
    if not ids:
        ids = [a for a in agent_id if a]
    if not ids:
        return None
    # ``Counter(ids).most_common(1)`` without the Counter (called for thousands of chats): a
    # dict keeps first-seen order and ``max`` returns the first of equal counts, as it does
    counts: dict[str, int] = {}
    for a in ids:
        counts[a] = counts.get(a, 0) + 1
    return max(counts.items(), key=_second)[0] if len(counts) > 1 else ids[0]


def _second(item: tuple[str, int]) -> int:
    return item[1]


@dataclass
class Conversation:
    conversation_id: str
    shop_id: str
    platform: str
    seq: list[int]
    role: list[str]
    text: list[str]
    norm: list[str]
    tokens: list[Any]
    ts_ns: list[int | None]  # UTC epoch nanoseconds; Timestamps only where a rule needs one
    auto: list[bool]
    event: list[str | None]
    agent_id: list[str | None]
    extra: dict[str, Any] = field(default_factory=dict)
    offset: int = 0  # index of the first message in the sorted partition
    index: int = 0  # index of the conversation in its Split

    def __len__(self) -> int:
        return len(self.seq)

    def is_human_agent(self, i: int) -> bool:
        return self.role[i] == "agent" and not self.auto[i]

    @cached_property
    def ts(self) -> list[pd.Timestamp | None]:
        return [None if t is None else pd.Timestamp(t, tz="UTC") for t in self.ts_ns]

    @cached_property
    def human_agent(self) -> list[int]:
        return [i for i, (r, a) in enumerate(zip(self.role, self.auto, strict=True)) if r == "agent" and not a]

    @cached_property
    def customer(self) -> list[int]:
        return [i for i, r in enumerate(self.role) if r == "customer"]

    @cached_property
    def events(self) -> frozenset[str]:
        return frozenset(e for e in self.event if e)

    @cached_property
    def main_agent(self) -> str | None:
        return main_agent(self.agent_id, self.human_agent)

    def positions(self, role: str) -> list[int]:
        return self.human_agent if role == "agent" else self.customer


def _str_list(values: list[Any]) -> list[str | None]:
    """``_str`` over a whole column (per-element ``pd.isna`` was a hot spot)."""
    return [v if v is None or isinstance(v, str) else _str(v) for v in values]


def _no_none(values: list[str | None]) -> list[str]:
    """None read as "" (the list itself when nothing is missing)."""
    return [v or "" for v in values] if None in values else values  # type: ignore[return-value]


def _bool_list(values: list[Any]) -> list[bool]:
    return [v if v is True or v is False else (False if v is None or pd.isna(v) else bool(v)) for v in values]


@dataclass
class Split:
    """A partition sorted by (conversation, seq), its columns as lists, and arrays for
    partition-wide masks. Conversations are built one at a time (``conversation(ci)``) and
    dropped after use: holding thousands alive made the garbage collector the hot spot.

    ``conv_of``: conversation index of each message; ``norm_codes``/``norm_uniques``: each
    message's ``norm_text`` as a code into the distinct texts.
    """

    conv_ids: list[Any]
    bounds: list[tuple[int, int]]  # per conversation: [start, end) in the sorted partition
    cols: dict[str, list[Any]]
    conv_of: np.ndarray
    norm_codes: np.ndarray
    norm_uniques: list[str]
    first_of: np.ndarray  # for each distinct text, the first message holding it
    human_agent: np.ndarray  # bool per message
    customer: np.ndarray  # bool per message
    ts_ns: np.ndarray  # int64 UTC epoch ns per message (0 where has_ts is False)
    has_ts: np.ndarray  # bool per message
    extra: dict[str, Any] = field(default_factory=dict)  # per-call data given to every conversation
    _index: Any = None
    cache: dict[Any, Any] = field(default_factory=dict)  # per-call arrays shared by rules' plans

    def __len__(self) -> int:
        return len(self.bounds)

    def phrase_index(self, env: Any) -> Any:
        """The split's ``engine.PhraseIndex`` (built on first use, once per call)."""
        if self._index is None:
            from qa_inspect.ruleengine.engine import PhraseIndex

            self._index = PhraseIndex(self, env)
        return self._index

    @property
    def tokens(self) -> list[Any]:
        return self.cols["tokens"]

    def shop(self, ci: int) -> str:
        return self.cols["shop"][self.bounds[ci][0]] or ""

    def platform(self, ci: int) -> str:
        return self.cols["platform"][self.bounds[ci][0]] or "other"

    @cached_property
    def shops(self) -> list[str]:
        """``shop_id`` of every conversation."""
        col = self.cols["shop"]
        return [col[s] or "" for s, _ in self.bounds]

    @cached_property
    def timed(self) -> np.ndarray:
        """Conversations with at least one timestamp."""
        return np.bincount(self.conv_of[self.has_ts], minlength=len(self)) > 0

    @cached_property
    def platforms(self) -> list[str]:
        """``platform`` of every conversation."""
        col = self.cols["platform"]
        return [col[s] or "other" for s, _ in self.bounds]

    @cached_property
    def human_list(self) -> list[bool]:
        """``human_agent`` as a list (indexing a numpy array one element at a time is slow)."""
        return self.human_agent.tolist()

    @cached_property
    def first_list(self) -> list[int]:
        """Index of each conversation's first message."""
        return [s for s, _ in self.bounds]

    def main_agent(self, ci: int) -> str | None:
        """``Conversation.main_agent`` of conversation ``ci`` (once per call)."""
        got = self.cache.get(("main_agent", ci), False)
        if got is False:
            s, e = self.bounds[ci]
            human = self.human_list
            got = self.cache[("main_agent", ci)] = main_agent(
                self.cols["agent"][s:e], [i for i in range(e - s) if human[s + i]])
        return got

    def conversation(self, ci: int) -> Conversation:
        s, e = self.bounds[ci]
        c = self.cols
        return Conversation(
            conversation_id=str(self.conv_ids[s]),
            shop_id=c["shop"][s] or "",
            platform=c["platform"][s] or "other",
            seq=c["seq"][s:e],
            role=c["role"][s:e],
            text=c["text"][s:e],
            norm=c["norm"][s:e],
            tokens=c["tokens"][s:e],
            ts_ns=c["ts"][s:e],
            auto=c["auto"][s:e],
            event=c["event"][s:e],
            agent_id=c["agent"][s:e],
            extra=dict(self.extra),
            offset=s,
            index=ci,
        )


def _fast_str_col(s: pd.Series) -> list[str | None]:
    """A string column as a list of str/None: values are converted once per distinct value."""
    return coded_strings(s)[0]


def split_conversations(partition: pd.DataFrame) -> Split:
    """The partition's conversations in (conversation_id, seq) order, columns converted once."""
    schema.require_columns(partition, NEEDED, "ruleengine")
    df = partition if _is_sorted(partition) else partition.sort_values([schema.CONVERSATION_ID, schema.SEQ],
                                                                        kind="stable")

    def str_col(c: str) -> list[str | None]:
        s = df[c]
        if isinstance(s.dtype, pd.StringDtype):  # only str/None: converted per distinct value
            return _fast_str_col(s)
        return _str_list(s.astype(object).where(s.notna(), None).tolist())

    cid_col = df[schema.CONVERSATION_ID]
    cid_codes = None
    if isinstance(cid_col.dtype, pd.StringDtype) and not cid_col.hasnans:  # one str per conversation
        conv_ids, cid_codes, _ = coded_strings(cid_col)
    else:
        conv_ids = cid_col.tolist()
    n = len(conv_ids)
    role = _no_none(str_col(schema.ROLE))
    norm_col = df[schema.NORM_TEXT]
    if isinstance(norm_col.dtype, pd.StringDtype):
        raw, codes, uniques = coded_strings(norm_col)
        norm = _no_none(raw)
        uniques = [t or "" for t in uniques]  # missing reads as "": same text as an empty one
    else:
        norm = [t or "" for t in str_col(schema.NORM_TEXT)]
        codes, uniques = pd.factorize(pd.Series(norm, dtype=object))
        uniques = list(uniques)
    ts_arr, ts_na = _ns_arrays(df[schema.TS])
    auto_col = df[schema.IS_AUTO_REPLY]
    auto = (np.asarray(auto_col, dtype=bool).tolist() if pd.api.types.is_bool_dtype(auto_col) and not auto_col.hasnans
            else _bool_list(auto_col.astype(object).tolist()))
    cols: dict[str, list[Any]] = {
        "shop": str_col(schema.SHOP_ID),
        "platform": str_col(schema.PLATFORM),
        "seq": (np.asarray(df[schema.SEQ], dtype=np.int64).tolist() if pd.api.types.is_integer_dtype(df[schema.SEQ])
                and not df[schema.SEQ].hasnans else [int(s) for s in df[schema.SEQ].tolist()]),
        "role": role,
        "text": _no_none(str_col(schema.TEXT)),
        "norm": norm,
        "tokens": df[schema.TOKENS].tolist(),
        "ts": ([None if m else v for v, m in zip(ts_arr.tolist(), ts_na.tolist(), strict=True)] if ts_na.any()
               else ts_arr.tolist()),
        "auto": auto,
        "event": str_col(schema.EVENT),
        "agent": str_col(schema.AGENT_ID),
    }
    bounds: list[tuple[int, int]] = []
    if n and not df[schema.CONVERSATION_ID].hasnans:  # equal ids are adjacent: cut where the id changes
        ids = cid_codes if cid_codes is not None else pd.factorize(df[schema.CONVERSATION_ID])[0]
        cuts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), n]
        bounds = list(zip(cuts[:-1], cuts[1:], strict=True))
    else:  # missing ids never equal each other (as ``==`` has it)
        start = 0
        for i in range(1, n + 1):
            if i < n and conv_ids[i] == conv_ids[start]:
                continue
            bounds.append((start, i))
            start = i
    conv_of = np.repeat(np.arange(len(bounds), dtype=np.int64), [e - s for s, e in bounds])
    if n:
        first = np.full(len(uniques), -1, dtype=np.int64)
        seen, pos = np.unique(codes, return_index=True)
        first[seen] = pos
        role_arr = np.asarray(role, dtype=object)
        human = (role_arr == "agent") & ~np.asarray(auto, dtype=bool)
        customer = role_arr == "customer"
    else:
        codes, uniques, first = np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=np.int64)
        human = customer = np.zeros(0, dtype=bool)
    return Split(conv_ids, bounds, cols, conv_of, np.asarray(codes, dtype=np.int64), uniques, first,
                 np.asarray(human, dtype=bool), np.asarray(customer, dtype=bool),
                 np.where(ts_na, 0, ts_arr), ~ts_na)


def _is_sorted(df: pd.DataFrame) -> bool:
    """Already in (conversation_id, seq) order (a stable sort would change nothing)."""
    conv = df[schema.CONVERSATION_ID]
    if len(df) < 2 or conv.hasnans or df[schema.SEQ].hasnans or not conv.is_monotonic_increasing:
        return False
    c = pd.factorize(conv)[0]
    try:
        seq = np.asarray(df[schema.SEQ], dtype=np.float64)
    except (TypeError, ValueError):
        return False
    same = c[1:] == c[:-1]
    return bool(np.all(~same | (seq[1:] >= seq[:-1])))


def _ns_arrays(ts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(UTC epoch ns, is-missing) arrays of a timestamp column (as ``_ns_list``)."""
    t = pd.to_datetime(ts, utc=True).dt.as_unit("ns")
    return np.asarray(t.array.asi8, dtype=np.int64), np.asarray(t.isna().to_numpy(), dtype=bool)


def iter_conversations(partition: pd.DataFrame) -> Iterator[Conversation]:
    """Yield conversations of a partition in (conversation_id, seq) order."""
    if partition.empty:
        schema.require_columns(partition, NEEDED, "ruleengine")
        return
    split = split_conversations(partition)
    for ci in range(len(split)):
        yield split.conversation(ci)
