"""A tiny message-frame builder for the knowledge tests."""

from __future__ import annotations

import pandas as pd

from qa_inspect import schema


def make_chat(shop_id: str, turns: list[tuple[str, str]], *, sku: str | None = None,
              ts: str = "2026-11-24 12:00:00+00:00", cid: str = "c1") -> pd.DataFrame:
    """A one-conversation partition in the message contract (role, text per turn)."""
    base = pd.Timestamp(ts)
    rows = []
    for i, (role, text) in enumerate(turns):
        rows.append({
            schema.PLATFORM: "tmall", schema.SHOP_ID: shop_id, schema.CONVERSATION_ID: f"{shop_id}:{cid}",
            schema.SEQ: i, schema.TS: base + pd.Timedelta(seconds=30 * i), schema.ROLE: role,
            schema.AGENT_ID: "agent1", schema.CUSTOMER_ID: "buyer1", schema.TEXT: text, schema.SKU: sku,
            schema.IS_AUTO_REPLY: False, schema.EVENT: None, schema.AMOUNT: None,
            schema.SOURCE_FILE: "t.csv", schema.SOURCE_LINE: i + 2,
        })
    df = pd.DataFrame(rows)
    return df.astype({schema.TS: "datetime64[ns, UTC]"})
