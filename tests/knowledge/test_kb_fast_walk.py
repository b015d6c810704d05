"""Round-3 fast paths of the knowledge stage give exactly the plain computation's results.

- the conversation walk (message plans per text, verdict tables per claim, texts seen once not
  cached, findings built by row) == ``reference_verify.reference_findings`` (no caches at all);
- ``faq.transform`` (bulk counting) == scikit-learn's ``transform``, bit for bit;
- ``faq._words`` (regex character test) == the ``isalnum`` filter;
- FAQ rows skipped by the word-cosine floor or by the vocabulary check are the ones the
  per-message reference does not match.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_inspect import schema
from qa_inspect.ingest import ingest_paths
from qa_inspect.knowledge import KnowledgeBase, catalog_words, verify_knowledge
from qa_inspect.knowledge.faq import _FILLER, _blank, _chars, _words, transform
from qa_inspect.text.normalize import normalize, normalize_text
from qa_inspect.text.tokenize import Tokenizer, tokenize

sys.path.insert(0, str(Path(__file__).parent))
from chats import make_chat  # noqa: E402
from reference_verify import reference_findings  # noqa: E402
from test_kb_speed_paths import _match_many_reference  # noqa: E402

_NUM = re.compile(r"\d+")


@pytest.fixture(scope="module")
def tokenizer(rules_dir: Path, kbs: dict[str, KnowledgeBase]) -> Tokenizer:
    return Tokenizer.from_rules(rules_dir, catalog_words(kbs))


@pytest.fixture(scope="module")
def sample(sample_logs_dir: Path, rules_dir: Path, tokenizer: Tokenizer) -> pd.DataFrame:
    msgs = ingest_paths([sample_logs_dir], rules_dir=rules_dir).messages
    return tokenize(normalize(msgs), tokenizer)


@pytest.fixture(scope="module")
def perturbed(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase], tokenizer: Tokenizer) -> pd.DataFrame:
    """Sample chats with other numbers, other product names and suffixes (as bench --variant
    perturbed), plus exact copies of some chats: texts seen once and texts seen often."""
    rng = random.Random(3)
    names = {s: sorted({w for p in kb.products.values() for w in [p.name, *p.aliases] if len(w) >= 2})
             for s, kb in kbs.items()}
    ids = sorted(sample[schema.CONVERSATION_ID].unique())
    base = sample[sample[schema.CONVERSATION_ID].isin(ids[:150])].drop(columns=[schema.NORM_TEXT, schema.TOKENS])
    texts = []
    for t, s in zip(base[schema.TEXT].astype(object), base[schema.SHOP_ID].astype(object), strict=True):
        if isinstance(t, str):
            t = _NUM.sub(lambda m: str(rng.randint(1, 10 ** min(len(m.group(0)), 4) - 1)), t)
            for n in names.get(s, []):
                if n in t and rng.random() < 0.5:
                    t = t.replace(n, rng.choice(names[s]), 1)
                    break
            t += rng.choice(["", "哦", "~", "呢", " 谢谢", "7"])
        texts.append(t)
    changed = base.copy()
    changed[schema.TEXT] = pd.Series(texts, index=base.index, dtype="string")
    copies = sample[sample[schema.CONVERSATION_ID].isin(ids[150:200])].drop(columns=[schema.NORM_TEXT,
                                                                                      schema.TOKENS])
    twice = copies.copy()
    twice[schema.CONVERSATION_ID] = twice[schema.CONVERSATION_ID] + "#2"
    return tokenize(normalize(pd.concat([changed, copies, twice], ignore_index=True)), tokenizer)


def test_walk_equals_reference_on_sample_logs(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    fast = verify_knowledge(sample, kbs)
    assert len(fast) > 1000
    pd.testing.assert_frame_equal(fast, reference_findings(sample, kbs))


def test_walk_equals_reference_on_perturbed_chats(perturbed: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    fast = verify_knowledge(perturbed, kbs)
    assert set(fast[schema.RULE_ID]) >= {"KB-PRICE", "KB-DEFLECT", "KB-FAQ"}
    pd.testing.assert_frame_equal(fast, reference_findings(perturbed, kbs))


def test_walk_equals_reference_on_edge_cases(kbs: dict[str, KnowledgeBase], tokenizer: Tokenizer) -> None:
    """No sku (fallback product), yes/no answers implying claims, dodges, FAQ questions,
    auto replies, Traditional text, the same text twice and a chat without timestamps."""
    chats = [
        make_chat("tmall_yuejia", [("customer", "四件套是纯棉的吗"), ("agent", "是的亲"), ("agent", "是的亲"),
                                   ("customer", "多少钱"), ("agent", "不清楚哦"), ("agent", "现在299元"),
                                   ("customer", "什么时候发货"), ("agent", "48小时内发货"),
                                   ("customer", "什么时候发货"), ("agent", "48小时内发货")], cid="a"),
        make_chat("jd_jike", [("customer", "充电宝还有货吗"), ("agent", "有的"), ("agent", "亲您好"),
                              ("customer", "保修多久"), ("agent", "自己看详情页"), ("agent", "保修一年")], cid="b"),
        make_chat("tw_meiyan", [("customer", "請問幾天出貨"), ("agent", "3天內出貨喔"), ("customer", "可以退嗎"),
                                ("agent", "7天鑑賞期")], cid="c"),
        make_chat("jd_jike", [("customer", "这个多少钱"), ("agent", "129元，送数据线"),
                              ("customer", "磁吸充电宝呢"), ("agent", "那个199")], sku=None, cid="d"),
    ]
    df = pd.concat(chats, ignore_index=True)
    df.loc[df.index[2], schema.IS_AUTO_REPLY] = True
    df = df.astype({schema.SKU: "object"})
    df.loc[df[schema.CONVERSATION_ID] == "jd_jike:b", schema.SKU] = next(iter(kbs["jd_jike"].products))
    df.loc[df[schema.CONVERSATION_ID] == "tw_meiyan:c", schema.TS] = pd.NaT
    part = tokenize(normalize(df), tokenizer)
    fast = verify_knowledge(part, kbs)
    assert len(fast) >= 5
    pd.testing.assert_frame_equal(fast, reference_findings(part, kbs))


# --- FAQ matching ------------------------------------------------------------------------------

_TEXT = st.lists(st.sampled_from(list("发货多久包邮退换保修价格吗的了亲 \t?？aB1２一年天") + ["什么时候", "几天", "  "]),
                max_size=20).map("".join)


def _same(a, b) -> None:  # noqa: ANN001
    assert type(a) is type(b) and a.shape == b.shape and a.dtype == b.dtype
    assert (a.indptr == b.indptr).all() and (a.indices == b.indices).all() and (a.data == b.data).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(_TEXT, min_size=1, max_size=12))
def test_transform_equals_sklearn_on_generated_text(kbs: dict[str, KnowledgeBase], docs: list[str]) -> None:
    for kb in kbs.values():
        ix = kb.faq_index
        if ix is None:
            continue
        _same(transform(ix.char_vec, docs), ix.char_vec.transform(docs))
        words = [ix.tokenizer.lcut(d) + ["_", " ", "的"] for d in docs]
        _same(transform(ix.word_vec, words), ix.word_vec.transform(words))


def test_transform_equals_sklearn_on_buyer_texts(perturbed: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    checked = 0
    for shop, kb in kbs.items():
        ix = kb.faq_index
        rows = perturbed[(perturbed[schema.SHOP_ID] == shop) & (perturbed[schema.ROLE] == "customer")]
        if ix is None or rows.empty:
            continue
        norms = rows[schema.NORM_TEXT].tolist()
        _same(transform(ix.char_vec, [_chars(_blank(n, ix.names)) for n in norms]),
              ix.char_vec.transform([_chars(_blank(n, ix.names)) for n in norms]))
        toks = [list(t) for t in rows[schema.TOKENS]]
        _same(transform(ix.word_vec, toks), ix.word_vec.transform(toks))
        checked += len(norms)
    assert checked > 500


def test_words_filter_is_the_isalnum_filter() -> None:
    """``_words`` tests characters with a regex; it must keep exactly what the isalnum filter kept."""
    chars = [chr(c) for c in range(0x30000) if not 0xD800 <= c <= 0xDFFF]
    tokens = chars + ["的", "在吗", "a b", " ", "_", "__", "_x", "1.5", "？", "！！", "ok"] + sorted(_FILLER)
    ref = [t for t in tokens if t.strip() and t not in _FILLER and any(c.isalnum() for c in t)]
    assert _words(tokens) == ref


def test_faq_skips_equal_the_per_message_reference(perturbed: pd.DataFrame,
                                                   kbs: dict[str, KnowledgeBase]) -> None:
    """Rows below the word-cosine floor and blanked texts without a vocabulary word are skipped;
    every row still gets the per-message (plain scikit-learn) answer."""
    skipped = 0
    for shop, kb in kbs.items():
        ix = kb.faq_index
        rows = perturbed[(perturbed[schema.SHOP_ID] == shop) & (perturbed[schema.ROLE] == "customer")].head(250)
        if ix is None or rows.empty:
            continue
        norms = rows[schema.NORM_TEXT].tolist() + ["随便聊聊天气", "好的谢谢", "发货"]
        toks = rows[schema.TOKENS].tolist() + [None, None, None]
        fast = ix.match_many(norms, toks)
        assert fast == _match_many_reference(ix, norms, toks)
        skipped += sum(not ix._may_have_words(_blank(n, ix.names)) for n in norms)
    assert skipped > 0


@pytest.mark.parametrize("threshold", [0.3, 0.55, 0.7, 0.9, 0.99])
def test_faq_word_floor_at_any_threshold(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase],
                                         threshold: float) -> None:
    """The floor follows the threshold (2t - 1): the FAQ questions asked verbatim (both cosines
    about 1) must still match at 0.99, and low thresholds skip nothing."""
    from dataclasses import replace

    for shop, kb in kbs.items():
        if kb.faq_index is None:
            continue
        ix = replace(kb.faq_index, threshold=threshold)
        rows = sample[(sample[schema.SHOP_ID] == shop) & (sample[schema.ROLE] == "customer")].head(80)
        norms = rows[schema.NORM_TEXT].tolist() + [normalize_text(e.question) for e in kb.faq]
        toks = rows[schema.TOKENS].tolist() + [None] * len(kb.faq)
        fast = ix.match_many(norms, toks)
        assert fast == _match_many_reference(ix, norms, toks)
        if threshold == 0.99:
            assert any(h is not None for h in fast[len(rows):])
