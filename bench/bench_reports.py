"""Time ``render_reports`` on a realistic synthetic run (default 500 agents, 3 shops, 3 nights).

Each agent serves one shop and has 20-40 conversations of 4-10 messages; about a third of the
messages carry a finding with an evidence span cut from the message text, a few conversations are
vetoed or overridden by a human review, and the review queue holds the worst 2 %. Prints seconds in
total and per page type (agent / merchant / coaching / index, measured by wrapping the page
functions) and the peak RSS. ``--profile FILE`` writes a cProfile dump (and prints the top 25).

    /work/venv/bin/python bench/bench_reports.py [--agents 500] [--seed 7] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import resource
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.reports import render as R
from qa_inspect.reports.data import AGENT_KPI_COLUMNS, SHOP_KPI_COLUMNS, ReportData, trend_from_conversations

SHOPS = {
    "tmall-home": Shop(shop_id="tmall-home", name="晨光家居旗舰店", platform="tmall", locale="zh-CN",
                       recipients=["owner@home.example"]),
    "jd-digital": Shop(shop_id="jd-digital", name="京东数码专营店", platform="jd", locale="zh-CN",
                       recipients=["ops@digital.example"]),
    "tw-island": Shop(shop_id="tw-island", name="小島選物", platform="shopee", locale="zh-TW",
                      timezone="Asia/Taipei", currency="TWD", recipients=["boss@island.example"]),
}
NIGHTS = ("2026-11-24", "2026-11-25", "2026-11-26")
CUSTOMER = ["你好，这个沙发多少钱？电话13812345678", "有现货吗？什么时候发货", "可以便宜点吗",
            "尺寸是多少，能放进两米的客厅吗", "怎么还没发货，我都等了三天了", "請問這件外套有M號嗎？",
            "运费怎么算？", "可以开发票吗", "质量怎么样，会不会掉色", "我要退货，东西坏了"]
AGENT = ["亲，这款现在是199元，活动价很划算哦", "有现货的亲，今天下单48小时内发货，现在下单还送收纳袋",
         "你自己看详情页吧", "亲，这款的尺寸是200×90cm，支持7天无理由退换", "好的亲", "爱买不买",
         "滿999免運喔，現在加購第二件打八折", "可以的，结账时填写税号即可", "亲亲稍等，我帮您查一下物流",
         "非常抱歉给您带来不便，我马上为您登记退货"]
RULES = [  # rule id, source, dimension, polarity, points, severity, explanation
    ("KB-PRICE", "knowledge", "product_knowledge", "-", 20.0, "major", "价格错误：目录价259元"),
    ("ATT-003", "rule", "attitude", "-", 10.0, "major", "推诿：让买家自己看"),
    ("MODEL:negative_tone", "model", "attitude", "-", 5.0, "minor", "语气敷衍"),
    ("RESP-SLOW", "rule", "responsiveness", "-", 8.0, "minor", "回复超过180秒"),
    ("SELL-001", "rule", "selling", "+", 5.0, "info", "主动促成：赠品引导下单"),
    ("SELL-002", "rule", "selling", "+", 3.0, "info", "消除顾虑"),
    ("ATT-001", "rule", "attitude", "-", 100.0, "critical", "辱骂/顶撞买家（一票否决）"),
]


def build(n_agents: int, seed: int) -> ReportData:
    rnd = random.Random(seed)
    shop_ids = list(SHOPS)
    t0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    convs: list[dict[str, Any]] = []
    msgs: list[dict[str, Any]] = []
    finds: list[dict[str, Any]] = []
    kpis: list[dict[str, Any]] = []
    for a in range(n_agents):
        shop = shop_ids[a % len(shop_ids)]
        agent = f"{shop}:agent{a:04d}"
        platform = SHOPS[shop].platform
        n_conv = rnd.randint(20, 40)
        for c in range(n_conv):
            cid = f"{shop}:buyer{rnd.randint(0, 10**6)}:{a}-{c}"
            buyer = f"buyer_{rnd.randint(0, 10**6)}"
            night = NIGHTS[c % 3]
            start = t0 + timedelta(days=c % 3, minutes=rnd.randint(0, 600))
            n_msg = rnd.randint(4, 10)
            n_f = 0
            veto = False
            for seq in range(n_msg):
                role = "customer" if seq % 2 == 0 else "agent"
                text = rnd.choice(CUSTOMER if role == "customer" else AGENT)
                msgs.append({S.PLATFORM: platform, S.SHOP_ID: shop, S.CONVERSATION_ID: cid, S.SEQ: seq,
                             S.TS: start + timedelta(seconds=40 * seq), S.ROLE: role, S.AGENT_ID: agent,
                             S.CUSTOMER_ID: buyer, S.TEXT: text, S.SKU: None, S.IS_AUTO_REPLY: False,
                             S.EVENT: None, S.AMOUNT: float("nan"), S.SOURCE_FILE: "bench.csv",
                             S.SOURCE_LINE: seq + 1})
                if role == "agent" and rnd.random() < 0.35:
                    rule = rnd.choice(RULES[:-1] if rnd.random() > 0.01 else RULES[-1:])
                    veto = veto or rule[0] == "ATT-001"
                    s = rnd.randint(0, max(0, len(text) - 4))
                    e = min(len(text), s + rnd.randint(3, 10))
                    finds.append({S.CONVERSATION_ID: cid, S.SHOP_ID: shop, S.AGENT_ID: agent,
                                  S.MESSAGE_INDEX: seq, S.RULE_ID: rule[0], S.DIMENSION: rule[2],
                                  S.POLARITY: rule[3], S.SEVERITY: rule[5], S.POINTS: rule[4],
                                  S.EVIDENCE: text[s:e], S.EVIDENCE_START: s, S.EVIDENCE_END: e,
                                  S.EXPLANATION: rule[6], S.SOURCE: rule[1],
                                  S.CONFIDENCE: 0.8 if rule[1] == "model" else 1.0})
                    n_f += 1
            scores = [rnd.uniform(40, 100) for _ in S.DIMENSIONS]
            total = 0.0 if veto else sum(scores) / len(scores)
            convs.append({S.CONVERSATION_ID: cid, S.SHOP_ID: shop, S.PLATFORM: platform, S.AGENT_ID: agent,
                          S.CUSTOMER_ID: buyer, S.NIGHT: night, S.STARTED_AT: start,
                          S.ENDED_AT: start + timedelta(seconds=40 * n_msg), S.N_MESSAGES: n_msg,
                          S.FIRST_RESPONSE_S: float(rnd.randint(5, 300)),
                          **{S.score_column(d): v for d, v in zip(S.DIMENSIONS, scores, strict=True)},
                          S.TOTAL: total, S.GRADE: "不合格" if total < 60 else "合格", S.VETO: veto,
                          S.VETO_RULE: "ATT-001" if veto else None, S.RISK: rnd.random(), S.N_FINDINGS: n_f})
        kpis.append({S.AGENT_ID: agent, S.SHOP_ID: shop, "conversations": n_conv, "messages": 7 * n_conv,
                     "first_response_avg_s": rnd.uniform(10, 120), "avg_response_s": rnd.uniform(20, 200),
                     "reply_rate": rnd.uniform(0.8, 1), "slow_replies": rnd.randint(0, 9),
                     "unanswered": rnd.randint(0, 3), "conversion_rate": rnd.random() / 2,
                     "attributed_sales": rnd.uniform(0, 9999), "consultations_per_day": n_conv / 3})
    conv = pd.DataFrame(convs, columns=list(S.CONVERSATION_COLUMNS))
    # a few supervisor overrides, as the pipeline passes them (TOTAL already the human one)
    ov = pd.Series([rnd.random() < 0.01 for _ in range(len(conv))])
    conv["auto_total"] = conv[S.TOTAL]
    conv[S.HUMAN_TOTAL] = conv[S.TOTAL].where(~ov, 75.0).where(ov)
    conv[S.OVERRIDDEN] = ov.to_numpy()
    conv.loc[ov.to_numpy(), S.TOTAL] = 75.0
    messages = pd.DataFrame(msgs, columns=list(S.MESSAGE_COLUMNS))
    messages[S.TS] = pd.to_datetime(messages[S.TS], utc=True)
    ak = pd.DataFrame(kpis, columns=list(AGENT_KPI_COLUMNS))
    sk = ak.groupby(S.SHOP_ID, as_index=False)[list(SHOP_KPI_COLUMNS[1:])].mean()[list(SHOP_KPI_COLUMNS)]
    worst = conv.sort_values(S.TOTAL).head(max(1, len(conv) // 50))
    rq = pd.DataFrame({S.CONVERSATION_ID: worst[S.CONVERSATION_ID], "reason": "low total",
                       "priority": range(len(worst), 0, -1)})
    return ReportData(run_id="bench-run", generated_at=datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
                      conversations=conv, messages=messages, findings=S.findings_frame(finds),
                      agent_kpis=ak, shop_kpis=sk, trend=trend_from_conversations(conv), review_queue=rq,
                      shops=dict(SHOPS), kb_answers={"这款现在是199元": "目录价259元，活动价229元",
                                                     "KB-PRICE": "以商品详情页目录价为准"})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=500, help="number of agents (default 500)")
    ap.add_argument("--seed", type=int, default=7, help="random seed")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a temp folder, deleted)")
    ap.add_argument("--profile", type=Path, default=None, help="write a cProfile dump here, print top 25")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    data = build(args.agents, args.seed)
    t_build = time.perf_counter() - t
    print(f"data: {args.agents} agents, {len(data.conversations)} conversations, {len(data.messages)} messages, "
          f"{len(data.findings)} findings (built in {t_build:.1f} s); RSS after build {_peak_rss_mb():.0f} MB")

    # per page type: wrap the module-level page functions render_reports calls
    spent: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for kind, name in (("agent", "agent_context"), ("merchant", "render_merchant"),
                       ("coaching", "coaching_context"), ("index", "index_context")):
        orig = getattr(R, name)

        def wrapped(*a: Any, _orig: Any = orig, _kind: str = kind, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _orig(*a, **k)
            finally:
                spent[_kind] += time.perf_counter() - t0
                counts[_kind] += 1

        setattr(R, name, wrapped)

    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp:
        out = args.out or Path(tmp)
        prof = cProfile.Profile() if args.profile else None
        t = time.perf_counter()
        if prof:
            prof.enable()
        idx = R.render_reports(data, out)
        if prof:
            prof.disable()
        total = time.perf_counter() - t
        size = sum(p.stat().st_size for p in idx.all_files())
    print(f"render_reports: {total:.1f} s total for {len(idx.all_files())} files ({size / 1e6:.0f} MB)")
    for kind in ("agent", "merchant", "coaching", "index"):
        print(f"  {kind:9s} {spent[kind]:7.2f} s  ({counts[kind]} calls, "
              f"{1000 * spent[kind] / max(1, counts[kind]):.0f} ms each; context building"
              f"{' + template' if kind == 'merchant' else ''})")
    print(f"  other      {total - sum(spent.values()):7.2f} s  (templates, writing, setup)")
    print(f"peak RSS {_peak_rss_mb():.0f} MB")
    if prof and args.profile:
        prof.dump_stats(str(args.profile))
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
