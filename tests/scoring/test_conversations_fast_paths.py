"""``build_conversations`` / ``local_date`` (group codes, one timezone conversion per shop) give
exactly what the group-by reference gives, on real-looking logs and on edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reference_conversations import ref_build_conversations, ref_local_date

from qa_inspect import schema as S
from qa_inspect.config import Shop, load_shops
from qa_inspect.ingest import ingest_paths
from qa_inspect.scoring.conversations import build_conversations, local_date
from qa_inspect.scoring.scorecard import DEFAULT_PRESALE_WORDS

SHOPS = {"s1": Shop(shop_id="s1", name="一号店", platform="tmall", timezone="Asia/Shanghai"),
         "s2": Shop(shop_id="s2", name="二号店", platform="shopee", timezone="Asia/Taipei")}


@pytest.fixture(scope="module")
def sample(rules_dir: Path, sample_logs_dir: Path) -> tuple[pd.DataFrame, dict[str, Shop]]:
    return ingest_paths(sample_logs_dir, rules_dir=rules_dir).messages, load_shops(rules_dir)


def _same(messages: pd.DataFrame, shops: dict[str, Shop], words: object = DEFAULT_PRESALE_WORDS) -> pd.DataFrame:
    got = build_conversations(messages, shops, words)  # type: ignore[arg-type]
    want = ref_build_conversations(messages, shops, words)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    return got


def test_sample_logs_match_reference(sample: tuple[pd.DataFrame, dict[str, Shop]]) -> None:
    m, shops = sample
    out = _same(m, shops)
    assert out[S.NIGHT].notna().all() and out[S.FIRST_RESPONSE_S].notna().any()
    shuffled = m.sample(frac=1.0, random_state=5).reset_index(drop=True)  # rows out of order
    _same(shuffled, shops)
    _same(m, {}, [])  # unknown shops (default timezone), no intent words


def random_messages(seed: int, n_conv: int = 60) -> pd.DataFrame:
    """Messy conversations: ties between agents, bots, auto-replies, missing ids and timestamps."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-11-25 15:50", tz="UTC")  # crosses midnight in Asia/Shanghai and Taipei
    rows = []
    for c in range(n_conv):
        shop = ["s1", "s2", "s9", None][rng.integers(4)]
        for seq in range(int(rng.integers(1, 9))):
            ts = t0 + pd.Timedelta(seconds=int(rng.integers(0, 40000))) if rng.random() > 0.1 else pd.NaT
            rows.append({
                S.CONVERSATION_ID: f"c{c:02d}", S.SHOP_ID: shop if rng.random() > 0.05 else None,
                S.PLATFORM: "tmall" if rng.random() > 0.05 else None, S.SEQ: seq, S.TS: ts,
                S.ROLE: ["customer", "agent", "bot", "system"][rng.integers(4)],
                S.AGENT_ID: [f"a{rng.integers(3)}", None][int(rng.random() < 0.2)],
                S.CUSTOMER_ID: [f"b{c}", None][int(rng.random() < 0.3)],
                S.TEXT: ["多少钱", "好的", "有货吗", "在的", None][rng.integers(5)],
                S.IS_AUTO_REPLY: [True, False, None][rng.integers(3)],
                S.EVENT: [None, None, "order", "payment", "refund"][rng.integers(5)],
            })
    df = pd.DataFrame(rows).astype({S.CONVERSATION_ID: "string", S.SHOP_ID: "string", S.PLATFORM: "string",
                                    S.ROLE: "string", S.AGENT_ID: "string", S.CUSTOMER_ID: "string",
                                    S.TEXT: "string", S.IS_AUTO_REPLY: "boolean", S.EVENT: "string"})
    df[S.TS] = pd.to_datetime(df[S.TS], utc=True)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_edge_cases_match_reference(seed: int) -> None:
    m = random_messages(seed)
    _same(m, SHOPS)
    m.loc[m.index[:4], S.CONVERSATION_ID] = pd.NA  # rows without an id: a conversation of their own
    out = _same(m, SHOPS)
    assert out[S.CONVERSATION_ID].isna().sum() == 1


def test_agent_ties_take_the_smallest_id() -> None:
    m = random_messages(9, n_conv=1).iloc[0:0]
    rows = [{S.CONVERSATION_ID: "t", S.SHOP_ID: "s1", S.PLATFORM: "tmall", S.SEQ: i,
             S.TS: pd.Timestamp("2026-11-25 02:00", tz="UTC") + pd.Timedelta(minutes=i), S.ROLE: role,
             S.AGENT_ID: agent, S.CUSTOMER_ID: "b", S.TEXT: "好的", S.IS_AUTO_REPLY: False, S.EVENT: None}
            for i, (role, agent) in enumerate([("customer", None), ("agent", "zed"), ("agent", "amy"),
                                               ("agent", "zed"), ("agent", "amy")])]
    m = pd.concat([m, pd.DataFrame(rows).astype(m.dtypes.to_dict())], ignore_index=True)
    out = _same(m, SHOPS)
    assert out[S.AGENT_ID].tolist() == ["amy"]
    assert out[S.FIRST_RESPONSE_S].tolist() == [60.0]


def test_empty_matches_reference() -> None:
    _same(random_messages(0).iloc[0:0], SHOPS)


def test_local_date_matches_reference(sample: tuple[pd.DataFrame, dict[str, Shop]]) -> None:
    m, shops = sample
    for df in (m, random_messages(4)):
        got = local_date(df[S.TS], df[S.SHOP_ID], shops | SHOPS)
        pd.testing.assert_series_equal(got, ref_local_date(df[S.TS], df[S.SHOP_ID], shops | SHOPS))
    empty = m.iloc[0:0]
    pd.testing.assert_series_equal(local_date(empty[S.TS], empty[S.SHOP_ID], shops),
                                   ref_local_date(empty[S.TS], empty[S.SHOP_ID], shops))
