"""A light per-conversation view of a partition, built once and shared by all rules."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from qa_inspect import schema

NEEDED = (schema.CONVERSATION_ID, schema.SHOP_ID, schema.PLATFORM, schema.SEQ, schema.ROLE,
          schema.TEXT, schema.NORM_TEXT, schema.TOKENS, schema.TS, schema.IS_AUTO_REPLY,
          schema.EVENT, schema.AGENT_ID)


def _str(v: Any) -> str | None:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return str(v)


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
        ids = [self.agent_id[i] for i in self.human_agent if self.agent_id[i]]
        if not ids:
            ids = [a for a in self.agent_id if a]
        return Counter(ids).most_common(1)[0][0] if ids else None

    def positions(self, role: str) -> list[int]:
        return self.human_agent if role == "agent" else self.customer


def _str_list(values: list[Any]) -> list[str | None]:
    """``_str`` over a whole column (per-element ``pd.isna`` was a hot spot)."""
    return [v if v is None or isinstance(v, str) else _str(v) for v in values]


def _bool_list(values: list[Any]) -> list[bool]:
    return [v if v is True or v is False else (False if v is None or pd.isna(v) else bool(v)) for v in values]


def _ns_list(ts: pd.Series) -> list[int | None]:
    """UTC epoch nanoseconds per row, None for NaT (building Timestamp objects for every row
    was a third of the rule engine's time)."""
    t = pd.to_datetime(ts, utc=True).dt.as_unit("ns")
    na = t.isna().to_numpy().tolist()
    vals = t.array.asi8.tolist()
    return [None if m else v for v, m in zip(vals, na, strict=True)]


def iter_conversations(partition: pd.DataFrame) -> Iterator[Conversation]:
    """Yield conversations of a partition in (conversation_id, seq) order.

    Columns are converted to Python lists once for the whole partition, then sliced.
    """
    schema.require_columns(partition, NEEDED, "ruleengine")
    if partition.empty:
        return
    df = partition.sort_values([schema.CONVERSATION_ID, schema.SEQ], kind="stable")

    def col(c: str) -> list[Any]:
        s = df[c]
        return s.astype(object).where(s.notna(), None).tolist()

    def str_col(c: str) -> list[str | None]:
        vals = col(c)
        # a string column holds only str/None here; anything else goes through _str
        return vals if isinstance(df[c].dtype, pd.StringDtype) else _str_list(vals)

    conv_ids = df[schema.CONVERSATION_ID].tolist()
    shop, platform = str_col(schema.SHOP_ID), str_col(schema.PLATFORM)
    seq = [int(s) for s in df[schema.SEQ].tolist()]
    role = [r or "" for r in str_col(schema.ROLE)]
    text = [t or "" for t in str_col(schema.TEXT)]
    norm = [t or "" for t in str_col(schema.NORM_TEXT)]
    tokens = df[schema.TOKENS].tolist()
    ts = _ns_list(df[schema.TS])
    auto = _bool_list(df[schema.IS_AUTO_REPLY].astype(object).tolist())
    event, agent = str_col(schema.EVENT), str_col(schema.AGENT_ID)
    n = len(conv_ids)
    start = 0
    for i in range(1, n + 1):
        if i < n and conv_ids[i] == conv_ids[start]:
            continue
        yield Conversation(
            conversation_id=str(conv_ids[start]),
            shop_id=shop[start] or "",
            platform=platform[start] or "other",
            seq=seq[start:i],
            role=role[start:i],
            text=text[start:i],
            norm=norm[start:i],
            tokens=tokens[start:i],
            ts_ns=ts[start:i],
            auto=auto[start:i],
            event=event[start:i],
            agent_id=agent[start:i],
        )
        start = i
