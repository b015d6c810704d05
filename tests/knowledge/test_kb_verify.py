"""verify_knowledge over message partitions: findings contract, product linking, deflection, FAQ."""

from __future__ import annotations

import pandas as pd
from chats import make_chat

from qa_inspect import schema
from qa_inspect.knowledge import verify_knowledge
from qa_inspect.text.normalize import normalize


def _neg(f: pd.DataFrame) -> pd.DataFrame:
    return f[f[schema.POLARITY] == "-"]


def test_wrong_price_finding_has_evidence_offsets_and_kb_value(kbs: dict) -> None:
    chat = make_chat("tmall_yuejia", [("customer", "纯棉四件套多少钱"), ("agent", "亲，活动价259元哦，很划算")])
    f = verify_knowledge(chat, kbs)
    assert list(f.columns) == list(schema.FINDING_COLUMNS)
    row = _neg(f).iloc[0]
    assert row[schema.RULE_ID] == "KB-PRICE" and row[schema.MESSAGE_INDEX] == 1
    text = chat[schema.TEXT].iloc[1]
    assert text[row[schema.EVIDENCE_START]:row[schema.EVIDENCE_END]] == row[schema.EVIDENCE] == "259元"
    assert "299" in row[schema.EXPLANATION] and "399" in row[schema.EXPLANATION]
    assert row[schema.SOURCE] == "knowledge" and row[schema.DIMENSION] == "product_knowledge"


def test_correct_claims_give_small_positive_findings(kbs: dict) -> None:
    chat = make_chat("tmall_yuejia", [("customer", "长绒棉四件套怎么样"),
                                      ("agent", "两百九十九元，两天内发货，支持七天无理由退换")])
    f = verify_knowledge(chat, kbs)
    assert _neg(f).empty
    pos = f[f[schema.POLARITY] == "+"]
    assert {"KB-PRICE", "KB-DISPATCH", "KB-RETURN"} <= set(pos[schema.RULE_ID])
    assert (pos[schema.POINTS] > 0).all() and (pos[schema.POINTS] <= 2).all()


def test_product_carried_across_turns_and_other_product_checked_separately(kbs: dict) -> None:
    chat = make_chat("jd_jike", [
        ("customer", "Air Pro保修多久"),
        ("agent", "保修一年的"),          # Air Pro: 12 months -> confirmed
        ("customer", "那H1头戴耳机呢"),
        ("agent", "H1也是保修一年"),       # H1: 24 months -> contradicted
    ])
    f = verify_knowledge(chat, kbs)
    w = f[f[schema.RULE_ID] == "KB-WARRANTY"].set_index(schema.MESSAGE_INDEX)
    assert w.loc[1, schema.POLARITY] == "+"
    assert w.loc[3, schema.POLARITY] == "-" and "24" in w.loc[3, schema.EXPLANATION]


def test_export_sku_links_the_product(kbs: dict) -> None:
    chat = make_chat("jd_jike", [("customer", "现在有货吗"), ("agent", "有现货的亲")], sku="JK-E02")
    f = verify_knowledge(chat, kbs)
    assert _neg(f)[schema.RULE_ID].tolist() == ["KB-STOCK"]  # JK-E02 stock 0


def test_promo_price_outside_its_dates_is_wrong(kbs: dict) -> None:
    turns = [("customer", "纯棉四件套多少钱"), ("agent", "活动价299元")]
    inside = verify_knowledge(make_chat("tmall_yuejia", turns), kbs)
    after = verify_knowledge(make_chat("tmall_yuejia", turns, ts="2026-12-05 12:00:00+00:00"), kbs)
    assert _neg(inside).empty
    assert _neg(after)[schema.RULE_ID].tolist() == ["KB-PRICE"]


def test_distractor_amounts_are_not_product_prices(kbs: dict) -> None:
    chat = make_chat("tmall_yuejia", [("customer", "纯棉四件套包邮吗"),
                                      ("agent", "运费10元，满99包邮，还差8块就包邮，加20元可以升级60支的")])
    assert _neg(verify_knowledge(chat, kbs)).empty


def test_traditional_chinese_shop(kbs: dict) -> None:
    chat = make_chat("tw_meiyan", [("customer", "維C精華還有貨嗎"), ("agent", "有現貨喔，價格NT$990，3天內出貨")],
                     ts="2026-11-24 13:00:00+00:00")
    f = verify_knowledge(normalize(chat), kbs)
    neg = _neg(f)
    assert set(neg[schema.RULE_ID]) == {"KB-STOCK", "KB-DISPATCH"}
    text = chat[schema.TEXT].iloc[1]
    for _, r in neg.iterrows():
        assert text[r[schema.EVIDENCE_START]:r[schema.EVIDENCE_END]] == r[schema.EVIDENCE]
    price = f[f[schema.RULE_ID] == "KB-PRICE"]
    assert price[schema.POLARITY].tolist() == ["+"] and "NT$990" in price[schema.EXPLANATION].iloc[0]


def test_deflection_of_answerable_question(kbs: dict) -> None:
    chat = make_chat("tmall_yuejia", [("customer", "羽绒被保修多久"), ("customer", "在吗"),
                                      ("agent", "这个我也不太清楚，您自己看详情页吧")])
    f = verify_knowledge(chat, kbs)
    d = f[f[schema.RULE_ID] == "KB-DEFLECT"]
    assert len(d) == 1 and "24" in d[schema.EXPLANATION].iloc[0]


def test_quoting_the_buyer_is_not_a_deflection(kbs: dict) -> None:
    chat = make_chat("tmall_yuejia", [("customer", "乳胶枕我也不清楚要多高的"),
                                      ("agent", "您说“不清楚要多高的”没关系，告诉我您的睡姿我帮您选")])
    assert (verify_knowledge(chat, kbs)[schema.RULE_ID] != "KB-DEFLECT").all()


def test_faq_answer_missing_key_facts(kbs: dict) -> None:
    good = make_chat("tmall_yuejia", [("customer", "你们家包邮吗"), ("agent", "全店满九十九元包邮，不满运费10元")])
    bad = make_chat("tmall_yuejia", [("customer", "你们家包邮吗"), ("agent", "好的亲")])
    fg = verify_knowledge(good, kbs)
    fb = verify_knowledge(bad, kbs)
    assert fg[(fg[schema.RULE_ID] == "KB-FAQ")][schema.POLARITY].tolist() == ["+"]
    miss = fb[fb[schema.RULE_ID] == "KB-FAQ"]
    assert miss[schema.POLARITY].tolist() == ["-"] and "满99包邮" in miss[schema.EXPLANATION].iloc[0]


def test_shop_without_kb_and_empty_partition(kbs: dict) -> None:
    assert verify_knowledge(make_chat("other_shop", [("agent", "活动价1元")]), kbs).empty
    empty = make_chat("tmall_yuejia", [("agent", "x")]).iloc[0:0]
    out = verify_knowledge(empty, kbs)
    assert out.empty and list(out.columns) == list(schema.FINDING_COLUMNS)


def test_partition_order_and_batching_do_not_change_results(kbs: dict) -> None:
    a = make_chat("tmall_yuejia", [("customer", "牛奶绒是纯棉的吗"), ("agent", "是的亲")], cid="a")
    b = make_chat("jd_jike", [("customer", "充电宝多少钱"), ("agent", "20000充电宝活动价99元")], cid="b")
    both = verify_knowledge(pd.concat([b, a]).sample(frac=1, random_state=1), kbs)
    one = pd.concat([verify_knowledge(a, kbs), verify_knowledge(b, kbs)])
    key = [schema.CONVERSATION_ID, schema.MESSAGE_INDEX, schema.RULE_ID, schema.EVIDENCE_START]
    pd.testing.assert_frame_equal(both.sort_values(key).reset_index(drop=True),
                                  one.sort_values(key).reset_index(drop=True))
    # the implied "是的" to "是纯棉的吗" about 牛奶绒 (polyester) is a wrong material claim
    assert "KB-MATERIAL" in set(_neg(both)[schema.RULE_ID])
