"""The fast paths of the knowledge stage give exactly the results of the full computation.

``extract_claims`` skips texts without any claim cue (CLAIM_CUE_RE); ``verify_knowledge``
caches mentions/claims per text for the whole partition. Neither may change a finding.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_inspect import schema
from qa_inspect.ingest import ingest_paths
from qa_inspect.knowledge import KnowledgeBase, catalog_words, verify_knowledge
from qa_inspect.knowledge.claims import CLAIM_CUE_RE, Claim, extract_claims
from qa_inspect.text.normalize import normalize, normalize_text
from qa_inspect.text.tokenize import Tokenizer, tokenize


def _key(claims: list[Claim]) -> list[tuple]:
    return [(c.kind, c.start, c.end, c.value, sorted(c.extra.items())) for c in claims]


@pytest.fixture(scope="module")
def sample(sample_logs_dir: Path, rules_dir: Path, kbs: dict[str, KnowledgeBase]) -> pd.DataFrame:
    msgs = ingest_paths([sample_logs_dir], rules_dir=rules_dir).messages
    return tokenize(normalize(msgs), Tokenizer.from_rules(rules_dir, catalog_words(kbs)))


def test_prefilter_is_exact_on_sample_logs(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    skipped = 0
    for shop, norm in set(zip(sample[schema.SHOP_ID], sample[schema.NORM_TEXT], strict=True)):
        kb = kbs.get(shop)
        finder = kb.find_materials if kb is not None else None
        fast = extract_claims(norm, [], finder)
        assert _key(fast) == _key(extract_claims(norm, [], finder, prefilter=False)), norm
        skipped += not CLAIM_CUE_RE.search(norm)
    assert skipped > 100  # the cheap path is really taken


# Cue characters and words mixed with chit-chat: the prefilter must never hide a claim.
_PIECES = ["满", "减", "包邮", "免运费", "运费", "险", "券", "折", "小时", "天", "发货", "发", "当天", "退", "无理由",
           "保修", "年", "个月", "元", "块", "¥", "价格", "有货", "没货", "现货", "库存", "送", "赠", "纯棉", "棉",
           "%", "mah", "w", "ml", "续航", "亲", "好的", "您", "的", "哦", "，", " ", "是", "这款", "两", "三", "半",
           "九", "十", "百", "1", "2", "9", "0", ".", "卖完", "没有了", "暂时没有", "$", "nt$", "rmb", "圆",
           "块钱", "到手", "拿下", "带走", "入手", "带回家", "券后", "折后", "只要", "仅需", "才", "卖", "现在",
           "目前", "活动价", "原价", "ipx", "spf", "h", "工作日", "钟头", "个半", "质保", "鉴赏期", "寄出",
           "出货", "件", "套", "含量", "一共"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=12))
def test_prefilter_is_exact_on_generated_text(kbs: dict[str, KnowledgeBase], pieces: list[str]) -> None:
    norm = normalize_text("".join(pieces))
    for kb in [None, *kbs.values()]:
        finder = kb.find_materials if kb is not None else None
        assert _key(extract_claims(norm, [], finder)) == _key(extract_claims(norm, [], finder, prefilter=False))


def test_partition_equals_conversations_one_by_one(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    """The per-partition text cache carries nothing from one conversation into another."""
    whole = verify_knowledge(sample, kbs)
    assert len(whole) > 50
    ids = sorted(sample[schema.CONVERSATION_ID].unique())[:120]
    sub = sample[sample[schema.CONVERSATION_ID].isin(ids)]
    alone = pd.concat([verify_knowledge(g, kbs) for _, g in sub.groupby(schema.CONVERSATION_ID)],
                      ignore_index=True)
    mine = whole[whole[schema.CONVERSATION_ID].isin(ids)]
    cols = list(schema.FINDING_COLUMNS)
    pd.testing.assert_frame_equal(mine.sort_values(cols).reset_index(drop=True),
                                  alone.sort_values(cols).reset_index(drop=True))


_CUES = ["才", "只要", "仅需", "现在", "目前", "卖", "价格", "活动价", "券后", "折后", "到手", "拿下", "带走", "入手",
         "带回家", "元", "块", "圆", "rmb", "$", "¥", "nt$", "满", "包邮", "免运", "运费", "运费险", "券", "折",
         "小时内发货", "天发货", "当天发", "天无理由", "天退换", "保修", "年保修", "小时续航", "续航", "有货", "没货",
         "库存", "送", "赠", "%", "mah", "w", "ipx", "纯棉", "是纯棉的"]


@pytest.mark.parametrize("cue", _CUES)
def test_prefilter_is_exact_around_each_cue(kbs: dict[str, KnowledgeBase], cue: str) -> None:
    finder = next(iter(kbs.values())).find_materials
    texts = [f"{cue}99", f"99{cue}", f"{cue}两百", f"两百{cue}", f"亲{cue}一个小样", f"{cue} 3", f"满300减30{cue}"]
    for t in texts:
        norm = normalize_text(t)
        assert _key(extract_claims(norm, [], finder)) == _key(extract_claims(norm, [], finder, prefilter=False)), t
