"""Helpers shared by the model tests (imported by module name; tests/models is on sys.path)."""

from __future__ import annotations

import pandas as pd


def agent_partition(texts: list[str], conversation_id: str = "t:1") -> pd.DataFrame:
    """Alternating customer/agent messages; ``texts`` are the agent's."""
    rows = []
    for i, t in enumerate(texts):
        rows.append({"conversation_id": conversation_id, "seq": 2 * i, "role": "customer", "text": "在吗",
                     "shop_id": "s1", "agent_id": "a1"})
        rows.append({"conversation_id": conversation_id, "seq": 2 * i + 1, "role": "agent", "text": t,
                     "shop_id": "s1", "agent_id": "a1"})
    return pd.DataFrame(rows)
