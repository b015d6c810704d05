"""Mechanical-service signs: copy-paste templates counted per shop without greetings/closings
(MEC-001/MEC-004), and partial answers to multi-topic questions (MEC-002)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from qa_inspect import schema
from qa_inspect.errors import ConfigError
from qa_inspect.ruleengine import RuleSet, apply_rules, apply_template_rules, load_ruleset, template_counts
from qa_inspect.ruleengine.engine import Env, run_rules, shop_template_key

PLATFORM = {"tm": "tmall", "jd": "jd", "tw": "shopee"}
Line = tuple[str, str] | tuple[str, str, str]  # (role, text[, agent id])


def chat(cid: str, lines: Sequence[Line], shop: str = "tm") -> pd.DataFrame:
    rows = []
    for i, line in enumerate(lines):
        role, text = line[0], line[1]
        agent = (line[2] if len(line) > 2 else "a1") if role == "agent" else None
        rows.append({schema.PLATFORM: PLATFORM[shop], schema.SHOP_ID: shop, schema.CONVERSATION_ID: f"{shop}:{cid}",
                     schema.SEQ: i, schema.TS: pd.NaT, schema.ROLE: role, schema.AGENT_ID: agent,
                     schema.CUSTOMER_ID: "c1", schema.TEXT: text, schema.SKU: None, schema.IS_AUTO_REPLY: False,
                     schema.EVENT: None, schema.AMOUNT: None, schema.SOURCE_FILE: "t", schema.SOURCE_LINE: i + 1})
    df = pd.DataFrame(rows, columns=list(schema.MESSAGE_COLUMNS))
    df[schema.TS] = pd.to_datetime(df[schema.TS], utc=True)
    return df


def only(findings: pd.DataFrame, rule_id: str) -> pd.DataFrame:
    return findings[findings[schema.RULE_ID] == rule_id].reset_index(drop=True)


# --- templates ----------------------------------------------------------------------------------

BLURB = "亲，本店商品均为天猫正品，支持7天无理由退换，满99包邮，有任何问题随时联系客服哦~请放心选购"
CLOSING = "您太客气了呢，这都是我应该做的呢~ 很高兴遇到您这么善解人意的客户，请问还有其他还可以帮到您的吗?"
GREETING = "亲，您好~欢迎光临悦家家居旗舰店，很高兴为您服务，请问有什么可以帮您的呢？今天全店满299减30哦"


def _blurb_chat(cid: str, shop: str = "tm") -> pd.DataFrame:
    return chat(cid, [("customer", "在吗"), ("agent", GREETING), ("customer", "这款多少钱"), ("agent", BLURB),
                      ("customer", "谢谢"), ("agent", CLOSING)], shop)


def test_templates_are_counted_per_shop(prep, default_ruleset: RuleSet) -> None:
    part = prep(*[_blurb_chat(f"t{i}") for i in range(8)], *[_blurb_chat(f"j{i}", "jd") for i in range(8)])
    counts = template_counts(part)
    key = "亲,本店商品均为天猫正品,支持7天无理由退换,满99包邮,有任何问题随时联系客服哦~请放心选购"
    assert counts[shop_template_key("tm", key)] == counts[shop_template_key("jd", key)] == 8
    # 8 chats per shop: below MEC-004's 10, although the batch has 16
    assert only(apply_template_rules(part, default_ruleset, counts), "MEC-004").empty
    batch = default_ruleset.by_id("MEC-004").model_copy(update={"scope": "batch"})
    f = run_rules(part, [batch], Env(default_ruleset, {}, counts))
    assert len(f) == 16 and (f[schema.MESSAGE_INDEX] == 3).all()
    assert "整批 16 通" in f.iloc[0][schema.EXPLANATION]


def test_greetings_and_closings_are_not_templates(prep, default_ruleset: RuleSet) -> None:
    part = prep(*[_blurb_chat(f"t{i}") for i in range(12)])
    f = only(apply_template_rules(part, default_ruleset, template_counts(part)), "MEC-004")
    # the pasted blurb (message 3) in every chat; the long greeting and closing never
    assert len(f) == 12 and set(f[schema.MESSAGE_INDEX]) == {3}
    assert f.iloc[0][schema.EXPLANATION] == "回复与本店 12 通会话完全相同（模板话术）"
    assert f.iloc[0][schema.AGENT_ID] == "a1"


def _script(agent: str, answers: Sequence[str]) -> list[Line]:
    lines: list[Line] = [("customer", "在吗"), ("agent", "您好，很高兴为您服务，请问有什么可以帮您", agent)]
    for q, a in zip(["有货吗", "什么时候发", "能便宜点吗"], answers, strict=True):
        lines += [("customer", q), ("agent", a, agent)]
    return [*lines, ("customer", "好"), ("agent", "感谢您的支持，祝您生活愉快", agent)]


PASTED = ["亲，页面显示有货的都可以直接拍哦", "亲，付款后按付款顺序尽快发出的哦", "亲，价格都是公司统一定的哦"]


def test_whole_conversation_template_needs_most_substantive_replies_pasted(prep, default_ruleset: RuleSet) -> None:
    own = ["蓝色今天刚到货，库存二十件左右", "今天四点前拍的今天发顺丰", "我给您申请一张满199减20的券"]
    mixed = PASTED[:1] + own[1:]  # one pasted reply of three: 1/3 < 80 %
    part = prep(*[chat(f"p{i}", _script("a1", PASTED)) for i in range(21)],
                chat("own", _script("a1", own)), chat("mixed", _script("a1", mixed)))
    f = only(apply_template_rules(part, default_ruleset, template_counts(part)), "MEC-001")
    assert sorted(f[schema.CONVERSATION_ID]) == sorted(f"tm:p{i}" for i in range(21))
    assert (f[schema.MESSAGE_INDEX] == -1).all()
    # greeting and closing were excluded: 3 counted replies, not 5
    assert f.iloc[0][schema.EXPLANATION].startswith("3/3 条人工回复为本店批量复用的模板话术")


def test_whole_conversation_template_is_attributed_to_the_agent_who_pasted(prep,
                                                                           default_ruleset: RuleSet) -> None:
    handover = [("customer", "在吗"), ("agent", "蓝色今天刚到货，库存二十件左右", "a1"),
                ("customer", "什么时候发"), ("agent", "今天四点前拍的今天发顺丰", "a1"),
                ("customer", "能便宜点吗"), ("agent", "我给您申请一张满199减20的券", "a1"),
                ("customer", "转人工"), ("agent", "我给您登记好颜色和地址了，明天一早出库", "a1"),
                *[(r, t, "a2") if r == "agent" else (r, t) for r, t, *_ in _script("a2", PASTED)[2:-2]]]
    part = prep(*[chat(f"p{i}", _script("a2", PASTED)) for i in range(20)], chat("h", handover))
    f = only(apply_template_rules(part, default_ruleset, template_counts(part)), "MEC-001")
    h = f[f[schema.CONVERSATION_ID] == "tm:h"]
    assert len(h) == 1 and h.iloc[0][schema.AGENT_ID] == "a2"
    assert h.iloc[0][schema.MESSAGE_INDEX] == 9  # a2's first pasted reply; a1 (main agent) is not blamed


# --- partial answers -----------------------------------------------------------------------------

def _mec2(prep, ruleset: RuleSet, *lines: Line, shop: str = "tm") -> pd.DataFrame:
    return only(apply_rules(prep(chat("x", lines, shop)), ruleset, {}), "MEC-002")


def test_partial_answer_names_the_missed_question_and_anchors_on_the_reply(prep, default_ruleset: RuleSet) -> None:
    f = _mec2(prep, default_ruleset, ("customer", "在吗"), ("agent", "在的"),
              ("customer", "这个现在什么价格？还有不合适能退吗"), ("agent", "现在活动价199元哦亲"))
    assert len(f) == 1
    row = f.iloc[0]
    assert row[schema.MESSAGE_INDEX] == 3 and row[schema.AGENT_ID] == "a1"
    assert row[schema.EVIDENCE] == "现在活动价199元哦亲"
    assert row[schema.EXPLANATION] == "买家问了价格、退换，客服只回应了价格，未回应退换（「还有不合适能退吗」）"
    assert (row[schema.SEVERITY], row[schema.DIMENSION]) == ("minor", "responsiveness")


@pytest.mark.parametrize(("lines", "fires"), [
    # answered across two replies, the buyer's 好的 in between does not end the window
    ([("customer", "多少钱？什么时候发货"), ("agent", "现在是299元"), ("customer", "好的"), ("agent", "明天发")], False),
    # the buyer had to ask again: the first answer missed it
    ([("customer", "多少钱？什么时候发货"), ("agent", "现在是299元"), ("customer", "那什么时候发货呢"),
      ("agent", "明天发")], True),
    # one question with two topic words (纯棉四件套 is the product)
    ([("customer", "纯棉四件套现在啥价"), ("agent", "现在是299元")], False),
    # same topic asked twice is one question
    ([("customer", "双十一过了还有优惠价吗？多少钱"), ("agent", "现在是299元")], False),
    # a question back names the topic but does not answer it
    ([("customer", "多少钱？几天发货？"), ("agent", "您要哪个颜色呢？"), ("agent", "现在是299元")], True),
    ([("customer", "多少钱？几天发货？"), ("agent", "请问您是要几号发货呢？")], False),
    # a hold is not an answer yet; the full answer follows
    ([("customer", "多少钱？几天发货？"), ("agent", "稍等我查一下价格"), ("agent", "299元，今天就发")], False),
    # a bare 是的 answers yes/no questions, not an open one
    ([("customer", "这个是纯棉的吗？包邮吗？"), ("agent", "是的亲")], False),
    ([("customer", "这个是纯棉的吗？多久能发货？"), ("agent", "是的")], True),
    # 有的，现货充足 names stock: it does not answer 包邮吗 as well
    ([("customer", "还有货吗？包邮吗？"), ("agent", "有的，现货充足")], True),
    # statements are not questions
    ([("customer", "颜色挺好看的，多少钱"), ("agent", "现在是299元")], False),
    # 满99包邮 is a shipping threshold, not the price; 7天无理由 is not a dispatch time
    ([("customer", "多少钱？包邮吗？"), ("agent", "我们是满99元包邮哦")], True),
    ([("customer", "几天发货？能退吗？"), ("agent", "支持7天无理由退换哦")], True),
    # a reply that covers nothing is another rule's business (unanswered / deflection)
    ([("customer", "多少钱？几天发货？"), ("agent", "在的亲")], False),
])
def test_partial_answer_cases(prep, default_ruleset: RuleSet, lines: list[Line], fires: bool) -> None:
    assert (not _mec2(prep, default_ruleset, *lines).empty) is fires


def test_partial_answer_reads_traditional_full_width_text(prep, default_ruleset: RuleSet) -> None:
    f = _mec2(prep, default_ruleset, ("customer", "這個成分是什麼？多久寄出？"), ("agent", "主要成分是玻尿酸喔"), shop="tw")
    assert len(f) == 1 and "「多久寄出？」" in f.iloc[0][schema.EXPLANATION]
    assert f.iloc[0][schema.EVIDENCE] == "主要成分是玻尿酸喔"
    both = _mec2(prep, default_ruleset, ("customer", "這個成分是什麼？多久寄出？"),
                 ("agent", "主要成分是玻尿酸喔，付款後兩天內寄出"), shop="tw")
    assert both.empty


PARTIAL = """\
  - id: T-PA
    name: 只答一部分
    type: partial_answer
    dimension: responsiveness
    severity: minor
    points: 1
    polarity: "-"
    description: d
    topics:
      price: {label: 价格, ask: [多少钱]}
      dispatch: {label: 发货, ask: [发货]}
    examples: {fail: [["买家: 多少钱？几天发货？", "客服: 99元"]], pass: [["买家: 多少钱", "客服: 99元"]]}
"""


def test_partial_answer_config_is_validated(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n" + textwrap.dedent(PARTIAL), encoding="utf-8")
    rs = load_ruleset(tmp_path)
    assert rs.by_id("T-PA").min_questions == 2
    bad = PARTIAL.replace("ask: [发货]", "ask: ['(发)\\1货']")
    (tmp_path / "a.yaml").write_text("rules:\n" + textwrap.dedent(bad), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_ruleset(tmp_path)
    assert "rule T-PA" in str(exc.value) and "topics.dispatch.ask" in str(exc.value)
    one = PARTIAL.replace("      dispatch: {label: 发货, ask: [发货]}\n", "")
    (tmp_path / "a.yaml").write_text("rules:\n" + textwrap.dedent(one), encoding="utf-8")
    with pytest.raises(ConfigError, match="at least two topics"):
        load_ruleset(tmp_path)


def test_template_exclusions_and_scope_are_validated(tmp_path: Path) -> None:
    body = """\
  - id: T-TPL
    name: 模板
    type: template
    dimension: attitude
    severity: minor
    points: 1
    polarity: "-"
    description: d
    scope: shops
    examples: {fail: [["买家: 在吗", "客服: 您好"]], pass: [["买家: 在吗", "客服: 您好"]]}
"""
    (tmp_path / "a.yaml").write_text("rules:\n" + textwrap.dedent(body), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_ruleset(tmp_path)
    assert "rule T-TPL" in str(exc.value) and "scope" in str(exc.value)
