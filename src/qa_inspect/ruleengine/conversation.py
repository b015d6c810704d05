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
    ts: list[pd.Timestamp | None]
    auto: list[bool]
    event: list[str | None]
    agent_id: list[str | None]
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seq)

    def is_human_agent(self, i: int) -> bool:
        return self.role[i] == "agent" and not self.auto[i]

    @cached_property
    def human_agent(self) -> list[int]:
        return [i for i in range(len(self)) if self.is_human_agent(i)]

    @cached_property
    def customer(self) -> list[int]:
        return [i for i in range(len(self)) if self.role[i] == "customer"]

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


def iter_conversations(partition: pd.DataFrame) -> Iterator[Conversation]:
    """Yield conversations of a partition in (conversation_id, seq) order."""
    schema.require_columns(partition, NEEDED, "ruleengine")
    if partition.empty:
        return
    df = partition.sort_values([schema.CONVERSATION_ID, schema.SEQ], kind="stable")
    cols = {c: df[c].tolist() for c in NEEDED}
    conv_ids = cols[schema.CONVERSATION_ID]
    n = len(conv_ids)
    start = 0
    for i in range(1, n + 1):
        if i < n and conv_ids[i] == conv_ids[start]:
            continue
        sl = slice(start, i)
        ts = [None if pd.isna(t) else t for t in cols[schema.TS][sl]]
        yield Conversation(
            conversation_id=str(conv_ids[start]),
            shop_id=_str(cols[schema.SHOP_ID][start]) or "",
            platform=_str(cols[schema.PLATFORM][start]) or "other",
            seq=[int(s) for s in cols[schema.SEQ][sl]],
            role=[_str(r) or "" for r in cols[schema.ROLE][sl]],
            text=[_str(t) or "" for t in cols[schema.TEXT][sl]],
            norm=[_str(t) or "" for t in cols[schema.NORM_TEXT][sl]],
            tokens=list(cols[schema.TOKENS][sl]),
            ts=ts,
            auto=[bool(a) if not pd.isna(a) else False for a in cols[schema.IS_AUTO_REPLY][sl]],
            event=[_str(e) for e in cols[schema.EVENT][sl]],
            agent_id=[_str(a) for a in cols[schema.AGENT_ID][sl]],
        )
        start = i
