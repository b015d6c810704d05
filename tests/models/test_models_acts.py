"""The shipped act model: output contract, hard negatives, evidence that points into the text."""

from __future__ import annotations

import pandas as pd
import pytest
from model_test_helpers import agent_partition

from qa_inspect import schema
from qa_inspect.models import act_findings, predict_acts


def _probs(shipped, texts: list[str]) -> pd.DataFrame:
    acts = predict_acts(agent_partition(texts), shipped)
    return acts.set_index(schema.SEQ)


def test_contract_only_agent_messages(shipped) -> None:
    part = agent_partition(["您好，欢迎光临", "好的"])
    acts = predict_acts(part, shipped)
    assert list(acts.columns) == [schema.CONVERSATION_ID, schema.SEQ, *map(schema.act_column, schema.ACT_LABELS)]
    assert sorted(acts[schema.SEQ]) == [1, 3]  # the agent rows, not the customer ones
    vals = acts[[schema.act_column(a) for a in schema.ACT_LABELS]].to_numpy()
    assert ((vals >= 0) & (vals <= 1)).all()


@pytest.mark.parametrize("text", [
    "你是不是没看详情页啊",
    "说了多少遍了，三天内发货",
    "自己不会看吗？页面写着呢",
    "你到底买不买",
    "說了好幾次了，自己不會看嗎",  # Traditional
])
def test_paraphrased_rudeness_is_negative_tone(shipped, text: str) -> None:
    p = _probs(shipped, [text])[schema.act_column("negative_tone")].iloc[0]
    assert p >= 0.7, (text, p)


@pytest.mark.parametrize("text", [
    "放心，快递员不会不知道的，我们已经备注了",          # double negative, not rude
    "您说\"你们就是骗子\"，这个情况我们已经记录并反馈了",  # quoting the buyer
    "实在抱歉，这个价格没办法再改了，不过可以给您申请一张10元优惠券",  # polite refusal + alternative
    "優惠券已經退回您的帳戶了喔",                          # selling word, non-selling context
])
def test_hard_negatives_are_not_negative_tone(shipped, text: str) -> None:
    p = _probs(shipped, [text])[schema.act_column("negative_tone")].iloc[0]
    assert p < 0.5, (text, p)


def test_selling_words_out_of_selling_context(shipped) -> None:
    probs = _probs(shipped, ["优惠券已经退回到您的账户了，可以在我的优惠券里查看",
                             "现在下单还可以领20元优惠券哦，活动今晚结束"])
    col = schema.act_column("proactive_selling")
    assert probs[col].iloc[0] < 0.5 < probs[col].iloc[1]


def test_findings_evidence_points_into_original_text(shipped, thresholds) -> None:
    part = agent_partition(["亲，你是不是沒看詳情頁啊", "请问您平时穿多大码呢", "好的"])
    acts = predict_acts(part, shipped)
    f = act_findings(part, acts, shipped, thresholds)
    assert set(f.columns) == set(schema.FINDING_COLUMNS)
    assert (f[schema.SOURCE] == "model").all()
    neg = f[f[schema.RULE_ID] == "MODEL:negative_tone"]
    assert list(neg[schema.MESSAGE_INDEX]) == [1]
    row = neg.iloc[0]
    text = part.set_index(schema.SEQ).loc[1, schema.TEXT]
    assert row[schema.EVIDENCE_START] >= 0
    assert text[row[schema.EVIDENCE_START]:row[schema.EVIDENCE_END]] == row[schema.EVIDENCE]
    assert row[schema.DIMENSION] == "attitude" and row[schema.POLARITY] == "-"
    assert 0.7 <= row[schema.CONFIDENCE] <= 1.0
    probing = f[f[schema.RULE_ID] == "MODEL:needs_probing"]
    assert list(probing[schema.MESSAGE_INDEX]) == [3] and (probing[schema.DIMENSION] == "selling").all()
    assert 5 not in set(f[schema.MESSAGE_INDEX])  # "好的" produces no finding


def test_no_agent_messages_gives_empty_frames(shipped, thresholds) -> None:
    part = pd.DataFrame({"conversation_id": ["x:1"], "seq": [0], "role": ["customer"], "text": ["在吗"]})
    acts = predict_acts(part, shipped)
    assert acts.empty and schema.act_column("empathy") in acts.columns
    assert act_findings(part, acts, shipped, thresholds).empty


def test_min_chars_suppresses_findings_on_tiny_messages(shipped, thresholds) -> None:
    part = agent_partition(["说", "说了多少遍了"])
    acts = predict_acts(part, shipped)
    cfg = thresholds.model_copy(deep=True)
    for pol in cfg.acts.values():
        pol.min_chars = 0
    for pol in cfg.acts.values():
        pol.min_chars = 2
    f = act_findings(part, acts, shipped, cfg)
    assert 1 not in set(f[schema.MESSAGE_INDEX])
    assert 3 in set(f[f[schema.RULE_ID] == "MODEL:negative_tone"][schema.MESSAGE_INDEX])
