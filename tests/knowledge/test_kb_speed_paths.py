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
           "出货", "件", "套", "含量", "一共",
           # units the duration / spec gates look for (round 3)
           "日", "月", "g", "db", "片", "支", "斤", "wh", "寄出", "包换", "内", "以内"]


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
         "库存", "送", "赠", "%", "mah", "w", "ipx", "纯棉", "是纯棉的",
         "天内发", "日发货", "h发货", "钟头发货", "个工作日发出", "个月保修", "年质保", "片", "支", "斤", "g", "ml", "db",
         "spf", "天退换", "鉴赏期", "无理由退货"]


@pytest.mark.parametrize("cue", _CUES)
def test_prefilter_is_exact_around_each_cue(kbs: dict[str, KnowledgeBase], cue: str) -> None:
    finder = next(iter(kbs.values())).find_materials
    texts = [f"{cue}99", f"99{cue}", f"{cue}两百", f"两百{cue}", f"亲{cue}一个小样", f"{cue} 3", f"满300减30{cue}"]
    for t in texts:
        norm = normalize_text(t)
        assert _key(extract_claims(norm, [], finder)) == _key(extract_claims(norm, [], finder, prefilter=False)), t


# --- verify_knowledge's vectorised column reads, FAQ batching and fact coverage -------------------


def test_object_columns_give_the_same_findings(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    """The Arrow-string fast paths (no NA, norm lengths checked at once) equal the generic per-row paths."""
    fast = verify_knowledge(sample, kbs)
    slow_in = sample.copy()
    for c in (schema.TEXT, schema.NORM_TEXT, schema.ROLE, schema.SHOP_ID, schema.CONVERSATION_ID,
              schema.AGENT_ID, schema.SKU):
        slow_in[c] = slow_in[c].astype(object)
    slow_in[schema.TS] = slow_in[schema.TS].astype(object)  # per-element local days
    pd.testing.assert_frame_equal(fast, verify_knowledge(slow_in, kbs))


def test_missing_and_stale_norm_text_are_normalised_here(sample: pd.DataFrame,
                                                         kbs: dict[str, KnowledgeBase]) -> None:
    """A norm_text that is missing or not as long as the text is recomputed (offsets stay valid)."""
    ids = sorted(sample[schema.CONVERSATION_ID].unique())[:80]
    sub = sample[sample[schema.CONVERSATION_ID].isin(ids)].reset_index(drop=True)
    broken = sub.copy()
    norm = broken[schema.NORM_TEXT].astype(object)
    norm[::7] = None
    norm[3::7] = norm[3::7].map(lambda s: s + "!")
    broken[schema.NORM_TEXT] = norm.astype("string")
    pd.testing.assert_frame_equal(verify_knowledge(sub, kbs), verify_knowledge(broken, kbs))
    pd.testing.assert_frame_equal(verify_knowledge(sub, kbs),
                                  verify_knowledge(sub.drop(columns=[schema.NORM_TEXT]), kbs))


def test_findings_frame_matches_the_schema_builder() -> None:
    from qa_inspect.knowledge.verify import _Findings, _Msgs

    m = _Msgs(texts=["满300减30哦", "x"], norms=["满300减30哦", "x"], roles=["agent", "agent"],
              cids=["c1", "c2"], shops=["s", "s"], agents=["a1", None], seqs=[3, 4], skus=[None, None],
              auto=[False, False])
    out = _Findings()
    out.add(m, 0, "KB-PRICE", "-", "major", 10.0, 0, 7, "说「满300减30」", 0.9)
    out.add(m, 1, "KB-FAQ", "+", "info", 0.67, 0, 1, "e", 0.7)
    ref = schema.findings_frame([
        {schema.CONVERSATION_ID: "c1", schema.SHOP_ID: "s", schema.AGENT_ID: "a1", schema.MESSAGE_INDEX: 3,
         schema.RULE_ID: "KB-PRICE", schema.DIMENSION: "product_knowledge", schema.POLARITY: "-",
         schema.SEVERITY: "major", schema.POINTS: 10.0, schema.EVIDENCE: "满300减30", schema.EVIDENCE_START: 0,
         schema.EVIDENCE_END: 7, schema.EXPLANATION: "说「满300减30」", schema.SOURCE: "knowledge",
         schema.CONFIDENCE: 0.9},
        {schema.CONVERSATION_ID: "c2", schema.SHOP_ID: "s", schema.AGENT_ID: None, schema.MESSAGE_INDEX: 4,
         schema.RULE_ID: "KB-FAQ", schema.DIMENSION: "product_knowledge", schema.POLARITY: "+",
         schema.SEVERITY: "info", schema.POINTS: 0.67, schema.EVIDENCE: "x", schema.EVIDENCE_START: 0,
         schema.EVIDENCE_END: 1, schema.EXPLANATION: "e", schema.SOURCE: "knowledge", schema.CONFIDENCE: 0.7},
    ])
    pd.testing.assert_frame_equal(out.frame(), ref)
    pd.testing.assert_frame_equal(_Findings().frame(), schema.empty_findings())


def test_conversation_days_equal_one_by_one() -> None:
    from qa_inspect.knowledge.verify import _conversation_days, _local_day

    ts = pd.Series(pd.to_datetime(["2026-11-24 15:59:59+00:00", "2026-11-24 16:00:00+00:00", None, None,
                                   "2026-11-25 03:00:00+00:00", None], utc=True))
    bounds = [(0, 1), (1, 2), (2, 4), (4, 6)]
    tzs = ["Asia/Shanghai", "Asia/Taipei", "Asia/Shanghai", "Asia/Shanghai"]

    def ref(series: pd.Series) -> list:
        out = []
        for (a, b), tz in zip(bounds, tzs, strict=True):
            first = next((t for t in series.iloc[a:b] if not pd.isna(t)), None)
            out.append(_local_day(first, tz) if first is not None else None)
        return out

    got = _conversation_days(ts, bounds, tzs)
    assert got == ref(ts)
    assert [str(d) for d in got] == ["2026-11-24", "2026-11-25", "None", "2026-11-25"]
    naive = ts.dt.tz_localize(None)
    assert _conversation_days(naive, bounds, tzs) == ref(naive)
    assert _conversation_days(ts.astype(object), bounds, tzs) == ref(ts)
    assert _conversation_days(ts, bounds, [None, "Asia/Taipei", None, None]) == [None, got[1], None, None]


def _match_many_reference(index, norms: list[str], tokens: list) -> list:  # noqa: ANN001
    """The FAQ match of each text on its own, computed the plain way (no batching, no dedup)."""
    from qa_inspect.knowledge.faq import _blank, _chars, _squash

    out = []
    for n, t in zip(norms, tokens, strict=True):
        b = _blank(n, index.names)
        toks = list(t) if t is not None and b == n else index.tokenizer.lcut(b)
        sim = 0.5 * (index.word_vec.transform([toks]) @ index.word_m.T).toarray()[0] \
            + 0.5 * (index.char_vec.transform([_chars(b)]) @ index.char_m.T).toarray()[0]
        i = int(sim.argmax())
        out.append((i, float(sim[i])) if sim[i] >= index.threshold and len(_squash(b)) >= 2 else None)
    return out


def test_faq_batch_equals_one_by_one(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    checked = 0
    for shop, kb in kbs.items():
        if kb.faq_index is None:
            continue
        rows = sample[(sample[schema.SHOP_ID] == shop) & (sample[schema.ROLE] == "customer")].head(150)
        norms = rows[schema.NORM_TEXT].tolist()
        toks = rows[schema.TOKENS].tolist()
        # the same texts again, without tokens and with other tokens: each its own entry
        norms += norms[:20] + norms[:20]
        toks += [None] * 20 + [["x"] for _ in range(20)]
        fast = kb.faq_index.match_many(norms, toks)
        assert fast == _match_many_reference(kb.faq_index, norms, toks)
        checked += sum(h is not None for h in fast)
    assert checked > 10


_FACT_PIECES = ["7天", "七天", "无理由", "退换", "48小时", "两天", "发货", "99", "元", "包邮", "满", "保修", "一年",
                "12个月", "顺丰", "运费险", "赠送", "1.5", "%", "亲", "，", " ", "可以", "的"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_FACT_PIECES), min_size=0, max_size=5), min_size=1, max_size=4),
       st.lists(st.sampled_from(_FACT_PIECES), min_size=0, max_size=14))
def test_covered_facts_equals_fact_covered(facts: list[list[str]], answer: list[str]) -> None:
    from qa_inspect.knowledge.faq import covered_facts, fact_covered

    fs = ["".join(f) for f in facts]
    ans = normalize_text("".join(answer))
    memo: dict = {}
    assert covered_facts(fs, ans, memo) == [f for f in fs if fact_covered(f, ans)]
    assert covered_facts(fs, ans, memo) == covered_facts(fs, ans)  # the memo changes nothing


def _longest_first(hits: list[tuple], ascii_ok=None) -> list[tuple]:  # noqa: ANN001
    """The plain selection ``find_products``/``find_materials`` make: longest first, then leftmost,
    non-overlapping, sorted by position (``ascii_ok`` rejects a hit: ASCII material terms)."""
    taken: list[tuple] = []
    for h in sorted(hits, key=lambda h: (-(h[1] - h[0]), h[0])):
        if all(h[1] <= t[0] or h[0] >= t[1] for t in taken) and (ascii_ok is None or ascii_ok(h)):
            taken.append(h)
    return sorted(taken)


def test_product_and_material_finders_equal_the_plain_selection(sample: pd.DataFrame,
                                                                kbs: dict[str, KnowledgeBase]) -> None:
    """Texts with none or one occurrence skip the sort (most texts): same mentions as sorting
    every occurrence, on the sample logs and on nested, overlapping and ASCII terms."""
    texts = set(sample[schema.NORM_TEXT].dropna().astype(str))
    for kb in kbs.values():
        names = sorted({normalize_text(w) for p in kb.products.values() for w in [p.name, *p.aliases] if w})
        texts |= {"", "pc", "abs外壳", "pcb壳", "纯棉纯棉", "100%纯棉被套和纯棉床单", *names[:30],
                  *(a + b for a, b in zip(names, names[1:], strict=False)), *(n + n for n in names[:10])}
    multi = 0
    for kb in kbs.values():
        for t in sorted(texts):
            occ = [(e - len(k) + 1, e + 1, skus, k) for e, (k, skus) in kb.names.iter(t)] if kb.names and t else []
            assert kb.find_products(t) == _longest_first(occ), t
            multi += len(occ) > 1
            if kb.materials is not None:
                mocc = [(e - len(m) + 1, e + 1, m) for e, m in kb.materials.iter(t)]
                def whole(h: tuple, t: str = t) -> bool:
                    return not h[2].isascii() or not ((h[0] > 0 and t[h[0] - 1].isascii() and t[h[0] - 1].isalnum())
                                                      or (h[1] < len(t) and t[h[1]].isascii() and t[h[1]].isalnum()))
                assert kb.find_materials(t) == _longest_first(mocc, whole), t
    assert multi > 20  # the sorting path is exercised too
