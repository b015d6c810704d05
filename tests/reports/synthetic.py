"""Synthetic report data: two shops (Simplified / Traditional), hostile chat text, planted markers.

Every shop has unique marker strings (agent ids, buyer nicknames, phone numbers) so tests can
prove that one merchant's report or email never shows another shop's people.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.reports.data import AGENT_KPI_COLUMNS, SHOP_KPI_COLUMNS, ReportData

SHOP_A, SHOP_B = "tmall-chenguang", "tw-island"
# agent ids: a CJK one, a Windows device name, and a path-traversal one
AGENT_A1, AGENT_A2 = "晨光:小美", "con"
AGENT_B1, AGENT_B2 = "../../x", "tw_agent_阿明"
BUYER_A, BUYER_B = "tb_buyer_lily88", "twbuyer_kiki520"
PHONE_A, PHONE_B = "13812345678", "0912-345-678"
# The script builds its markers by concatenation, so they can only appear in the DOM if it RAN.
SCRIPT = ('<script>document.title="PW"+"NED";var e=document.createElement("div");'
          'e.id="pw"+"ned";document.body.appendChild(e)</script>')
HOSTILE = SCRIPT + ' <img src=x onerror="document.title=\'PW\'+\'NED2\'"> {{ 7*7 }} {% if 1 %}x{% endif %} "><b>bold</b>'
LONG = "超长" * 1500 + "END"
WRONG_PRICE = "这款现在是199元"
KB_PRICE = "目录价259元，活动价229元（11-20至11-30）"

SHOPS = {
    SHOP_A: Shop(shop_id=SHOP_A, name="晨光家居旗舰店", platform="tmall", locale="zh-CN",
                 recipients=["owner@chenguang.example", "ops@chenguang.example"]),
    SHOP_B: Shop(shop_id=SHOP_B, name="小島選物", platform="shopee", locale="zh-TW",
                 timezone="Asia/Taipei", currency="TWD", recipients=["boss@island.example"]),
}

# (shop, conv id, agent, buyer, night, total, scores, [(role, text)], [finding specs])
# finding spec: (seq, rule_id, source, dimension, polarity, points, evidence or None, explanation)
CONVS: list[tuple[Any, ...]] = [
    (SHOP_A, "a1", AGENT_A1, BUYER_A, "2026-11-24", 52.0, (40, 80, 45, 60), [
        ("customer", f"你好，我是{BUYER_A}，电话{PHONE_A}，这个沙发多少钱？"),
        ("agent", f"{BUYER_A}亲，{WRONG_PRICE}，你自己看详情页吧"),
        ("customer", HOSTILE),
        ("agent", "好的亲"),
    ], [
        (1, "KB-PRICE", "knowledge", "product_knowledge", "-", 20.0, WRONG_PRICE, "价格错误：目录价259元"),
        (1, "ATT-003", "rule", "attitude", "-", 10.0, "你自己看详情页吧", "推诿：让买家自己看"),
        (3, "MODEL:negative_tone", "model", "attitude", "-", 5.0, "好的亲", "语气敷衍"),
        (3, "RESP-SLOW", "rule", "responsiveness", "-", 8.0, None, "回复超过180秒"),
    ]),
    (SHOP_A, "a2", AGENT_A1, "buyer_a_two", "2026-11-25", 93.0, (95, 98, 90, 92), [
        ("customer", "请问有现货吗？"),
        ("agent", "有现货的亲，今天下单48小时内发货，现在下单还送同款收纳袋哦"),
    ], [
        (1, "SELL-001", "rule", "selling", "+", 5.0, "现在下单还送同款收纳袋", "主动促成：赠品引导下单"),
    ]),
    (SHOP_A, "a3", AGENT_A2, "buyer_a_three", "2026-11-25", 71.0, (70, 75, 72, 68), [
        ("customer", "<b>不是粗体</b> " + LONG),
        ("agent", "亲，这款的尺寸是200×90cm，支持7天无理由退换"),
    ], [
        (1, "SELL-002", "rule", "selling", "+", 3.0, "支持7天无理由退换", "消除顾虑"),
        (-1, "RESP-FIRST", "rule", "responsiveness", "-", 6.0, None, "首次响应慢"),
    ]),
    (SHOP_A, "a4", AGENT_A2, BUYER_A, "2026-11-26", 0.0, (50, 60, 0, 70), [
        ("customer", "怎么还没发货"),
        ("agent", "爱买不买"),
    ], [
        (1, "ATT-001", "rule", "attitude", "-", 100.0, "爱买不买", "辱骂/顶撞买家（一票否决）"),
    ]),
    (SHOP_B, "b1", AGENT_B1, BUYER_B, "2026-11-24", 64.0, (60, 70, 55, 75), [
        ("customer", f"請問這件外套有M號嗎？我的手機是{PHONE_B}"),
        ("agent", f"已記下您的手機{PHONE_B}，沒有了，你去別家看看"),
    ], [
        (1, "ATT-002", "rule", "attitude", "-", 10.0, "你去別家看看", "推走買家"),
    ]),
    (SHOP_B, "b2", AGENT_B2, "twbuyer_momo", "2026-11-25", 88.0, (90, 85, 90, 88), [
        ("customer", "運費怎麼算？"),
        ("agent", "滿999免運喔，現在加購第二件打八折"),
    ], [
        (1, "SELL-003", "rule", "selling", "+", 4.0, "現在加購第二件打八折", "加購推薦"),
    ]),
    (SHOP_B, "b3", AGENT_B2, BUYER_B, "2026-11-26", 79.0, (80, 75, 80, 82), [
        ("customer", "可以開發票嗎"),
        ("agent", "可以的，結帳時填寫統編即可"),
    ], []),
]


def build_report_data() -> ReportData:
    t0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    msgs: list[dict[str, Any]] = []
    convs: list[dict[str, Any]] = []
    finds: list[dict[str, Any]] = []
    for k, (shop, cid_raw, agent, buyer, night, total, scores, lines, fspecs) in enumerate(CONVS):
        cid = f"{shop}:{cid_raw}"
        start = t0 + timedelta(hours=k)
        platform = SHOPS[shop].platform
        for seq, (role, text) in enumerate(lines):
            msgs.append({S.PLATFORM: platform, S.SHOP_ID: shop, S.CONVERSATION_ID: cid, S.SEQ: seq,
                         S.TS: start + timedelta(seconds=40 * seq), S.ROLE: role, S.AGENT_ID: agent,
                         S.CUSTOMER_ID: buyer, S.TEXT: text, S.SKU: None, S.IS_AUTO_REPLY: False,
                         S.EVENT: None, S.AMOUNT: float("nan"), S.SOURCE_FILE: "synthetic.csv",
                         S.SOURCE_LINE: seq + 1})
        for seq, rule, source, dim, pol, pts, ev, expl in fspecs:
            text = lines[seq][1] if seq >= 0 else ""
            a = text.index(ev) if ev else -1
            finds.append({S.CONVERSATION_ID: cid, S.SHOP_ID: shop, S.AGENT_ID: agent, S.MESSAGE_INDEX: seq,
                          S.RULE_ID: rule, S.DIMENSION: dim, S.POLARITY: pol,
                          S.SEVERITY: "critical" if pts >= 100 else "major", S.POINTS: pts,
                          S.EVIDENCE: ev or "", S.EVIDENCE_START: a, S.EVIDENCE_END: a + len(ev) if ev else -1,
                          S.EXPLANATION: expl, S.SOURCE: source,
                          S.CONFIDENCE: 0.82 if source == "model" else 1.0})
        veto = total == 0.0
        convs.append({S.CONVERSATION_ID: cid, S.SHOP_ID: shop, S.PLATFORM: platform, S.AGENT_ID: agent,
                      S.CUSTOMER_ID: buyer, S.NIGHT: night, S.STARTED_AT: start,
                      S.ENDED_AT: start + timedelta(seconds=40 * len(lines)), S.N_MESSAGES: len(lines),
                      S.FIRST_RESPONSE_S: 40.0,
                      **{S.score_column(d): float(v) for d, v in zip(S.DIMENSIONS, scores, strict=True)},
                      S.TOTAL: total, S.GRADE: "不合格" if total < 60 else "合格", S.VETO: veto,
                      S.VETO_RULE: "ATT-001" if veto else None, S.RISK: 0.3, S.N_FINDINGS: len(fspecs)})
    conv = pd.DataFrame(convs, columns=list(S.CONVERSATION_COLUMNS))
    agent_kpis = pd.DataFrame([
        {S.AGENT_ID: a, S.SHOP_ID: s, "conversations": n, "messages": 2 * n, "first_response_avg_s": fr,
         "avg_response_s": fr * 1.5, "reply_rate": rr, "slow_replies": sl, "unanswered": un,
         "conversion_rate": cr, "attributed_sales": sales, "consultations_per_day": n / 3}
        for a, s, n, fr, rr, sl, un, cr, sales in [
            (AGENT_A1, SHOP_A, 2, 35.0, 0.98, 1, 0, 0.5, 1299.0),
            (AGENT_A2, SHOP_A, 2, 95.0, 0.9, 2, 1, 0.0, 0.0),
            (AGENT_B1, SHOP_B, 1, 20.0, 1.0, 0, 0, 0.0, 0.0),
            (AGENT_B2, SHOP_B, 2, 15.0, 1.0, 0, 0, 0.5, 2490.0),
        ]], columns=list(AGENT_KPI_COLUMNS))
    shop_kpis = pd.DataFrame([
        {S.SHOP_ID: SHOP_A, "conversations": 4, "messages": 10, "first_response_avg_s": 65.0,
         "avg_response_s": 90.0, "reply_rate": 0.94, "slow_replies": 3, "unanswered": 1,
         "conversion_rate": 0.25, "attributed_sales": 1299.0, "consultations_per_day": 1.33},
        {S.SHOP_ID: SHOP_B, "conversations": 3, "messages": 6, "first_response_avg_s": 17.0,
         "avg_response_s": 25.0, "reply_rate": 1.0, "slow_replies": 0, "unanswered": 0,
         "conversion_rate": 0.33, "attributed_sales": 2490.0, "consultations_per_day": 1.0},
    ], columns=list(SHOP_KPI_COLUMNS))
    c = conv.assign(_t=conv[S.TOTAL])
    trend = (c.groupby([S.NIGHT, S.AGENT_ID])["_t"].agg(["mean", "count"]).reset_index()
             .rename(columns={"mean": "mean_total", "count": "n"}))
    review = pd.DataFrame([
        {S.CONVERSATION_ID: f"{SHOP_A}:a4", "reason": "veto ATT-001", "priority": 3},
        {S.CONVERSATION_ID: f"{SHOP_B}:b1", "reason": "model/rule disagree", "priority": 1},
    ])
    messages = pd.DataFrame(msgs, columns=list(S.MESSAGE_COLUMNS))
    messages[S.TS] = pd.to_datetime(messages[S.TS], utc=True)
    return ReportData(
        run_id="run-2026-11-26", generated_at=datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
        conversations=conv, messages=messages, findings=S.findings_frame(finds),
        agent_kpis=agent_kpis, shop_kpis=shop_kpis, trend=trend, review_queue=review,
        shops=dict(SHOPS), kb_answers={WRONG_PRICE: KB_PRICE},
    )


def bench_night(agents: int, shops: int) -> ReportData:
    """bench/bench_reports.py's synthetic night (loaded from the file: bench/ is not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_reports.py"
    spec = importlib.util.spec_from_file_location("bench_reports", path)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_reports"] = bench
    spec.loader.exec_module(bench)
    return bench.build(agents, shops)
