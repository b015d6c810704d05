"""Every artefact that leaves the QA team: one shop's data only, and no personal data.

Three shops (Simplified and Traditional) each carry a unique marker in every field that can reach
a page (shop name, agent ids, buyer nicknames, conversation ids, message text, finding evidence and
explanations, KB answers, review reasons) and their own phone / ID-card / e-mail / order / address
values. Merchant pages, the e-mails (.eml: headers, HTML, plain text, attachment, file names), chart
alt texts and the coaching pack are searched for foreign markers and for raw personal data.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.reports import render_reports, send_reports
from qa_inspect.reports.data import AGENT_KPI_COLUMNS, SHOP_KPI_COLUMNS, ReportData, buyer_alias
from qa_inspect.reports.render import ReportIndex, render_merchant

MARK = {"shop-alpha": "QZALPHA", "shop-bravo": "QZBRAVO", "shop-charlie": "QZCHARLIE"}
LOCALE = {"shop-alpha": "zh-CN", "shop-bravo": "zh-TW", "shop-charlie": "zh-CN"}
PII: dict[str, dict[str, str]] = {
    "shop-alpha": {"phone": "13912345678", "id_card": "11010519491231002X", "email": "alpha.buyer@qq.com",
                   "order": "3012345678901234", "address": "张江路88号5栋1203室"},
    "shop-bravo": {"phone": "0912-345-678", "id_card": "A123456789", "email": "bravo.kiki@gmail.com",
                   "order": "1234567890123", "address": "松仁路100號12樓之3"},
    "shop-charlie": {"phone": "+86 137-1111-2222", "id_card": "440301199001011234", "email": "charlie_c@163.com",
                     "order": "4455667788990011223", "address": "建国路88号院3号楼2单元501室"},
}
REGION = {"shop-alpha": "上海市浦东新区", "shop-bravo": "台北市信義區", "shop-charlie": "北京市朝阳区"}


def _lines(shop: str, k: int) -> list[tuple[str, str]]:
    m, p = MARK[shop], PII[shop]
    if LOCALE[shop] == "zh-TW":
        return [("customer", f"{m}msg{k} 我的手機是{p['phone']}，身分證字號{p['id_card']}，訂單編號{p['order']}"),
                ("agent", f"{m}evidence{k} 好的，訂單{p['order']}寄到{REGION[shop]}{p['address']}，"
                          f"電話{p['phone']}，證號{p['id_card']}，發票寄{p['email']}")]
    return [("customer", f"{m}msg{k} 我手机{p['phone']}，身份证{p['id_card']}，订单号{p['order']}"),
            ("agent", f"{m}evidence{k} 好的，订单{p['order']}收货地址{REGION[shop]}{p['address']}，"
                      f"电话{p['phone']}，身份证{p['id_card']}，发票发到{p['email']}")]


def marked_data() -> ReportData:
    t0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    msgs: list[dict[str, Any]] = []
    convs: list[dict[str, Any]] = []
    finds: list[dict[str, Any]] = []
    kb: dict[str, str] = {}
    review: list[dict[str, Any]] = []
    for shop, m in MARK.items():
        for k in range(2):
            agent = f"agent-{m}-0"  # one agent per shop: fewer agent pages (charts) to render
            buyer = f"buyer{m}{k}" if k == 0 else PII[shop]["phone"].replace(" ", "")  # a phone as nickname
            start = t0 + timedelta(hours=k)
            # ids as ingest's sessionise builds them: they contain the buyer nickname
            cid = f"{shop}:{buyer}:{start:%Y%m%dT%H%M%S}"
            lines = _lines(shop, k)
            for seq, (role, text) in enumerate(lines):
                msgs.append({S.PLATFORM: "tmall", S.SHOP_ID: shop, S.CONVERSATION_ID: cid, S.SEQ: seq,
                             S.TS: start + timedelta(seconds=30 * seq), S.ROLE: role, S.AGENT_ID: agent,
                             S.CUSTOMER_ID: buyer, S.TEXT: text, S.SKU: None, S.IS_AUTO_REPLY: False,
                             S.EVENT: None, S.AMOUNT: float("nan"), S.SOURCE_FILE: "x.csv", S.SOURCE_LINE: seq + 1})
            ev = lines[1][1]  # the whole agent message: evidence spans the PII too
            finds.append({S.CONVERSATION_ID: cid, S.SHOP_ID: shop, S.AGENT_ID: agent, S.MESSAGE_INDEX: 1,
                          S.RULE_ID: f"RULE-{m}", S.DIMENSION: "attitude", S.POLARITY: "-", S.SEVERITY: "major",
                          S.POINTS: 10.0, S.EVIDENCE: ev, S.EVIDENCE_START: 0, S.EVIDENCE_END: len(ev),
                          S.EXPLANATION: f"{m}explain 复述了买家手机{PII[shop]['phone']}", S.SOURCE: "rule",
                          S.CONFIDENCE: 1.0})
            kb[ev] = f"{m}kbanswer"
            review.append({S.CONVERSATION_ID: cid, "reason": f"{m}reason", "priority": 2 - k})
            convs.append({S.CONVERSATION_ID: cid, S.SHOP_ID: shop, S.PLATFORM: "tmall", S.AGENT_ID: agent,
                          S.CUSTOMER_ID: buyer, S.NIGHT: f"2026-11-2{4 + k}", S.STARTED_AT: start,
                          S.ENDED_AT: start + timedelta(seconds=60), S.N_MESSAGES: 2, S.FIRST_RESPONSE_S: 30.0,
                          **{S.score_column(d): 70.0 for d in S.DIMENSIONS}, S.TOTAL: 60.0 + k,
                          S.GRADE: "合格", S.VETO: False, S.VETO_RULE: None, S.RISK: 0.2, S.N_FINDINGS: 1})
    kpi = {"conversations": 1, "messages": 2, "first_response_avg_s": 30.0, "avg_response_s": 30.0,
           "reply_rate": 1.0, "slow_replies": 0, "unanswered": 0, "conversion_rate": 0.0,
           "attributed_sales": 0.0, "consultations_per_day": 1.0}
    shops = {s: Shop(shop_id=s, name=f"{m}店", platform="tmall", locale=LOCALE[s],  # type: ignore[arg-type]
                     recipients=[f"boss@{s}.example", f"ops@{s}.example"]) for s, m in MARK.items()}
    messages = pd.DataFrame(msgs, columns=list(S.MESSAGE_COLUMNS))
    messages[S.TS] = pd.to_datetime(messages[S.TS], utc=True)
    conv = pd.DataFrame(convs, columns=list(S.CONVERSATION_COLUMNS))
    return ReportData(
        run_id="run-iso", generated_at=t0, conversations=conv, messages=messages,
        findings=S.findings_frame(finds), shops=shops, kb_answers=kb,
        agent_kpis=pd.DataFrame([{S.AGENT_ID: a, S.SHOP_ID: s, **kpi} for a, s in
                                 conv[[S.AGENT_ID, S.SHOP_ID]].itertuples(index=False)], columns=list(AGENT_KPI_COLUMNS)),
        shop_kpis=pd.DataFrame([{S.SHOP_ID: s, **kpi} for s in MARK], columns=list(SHOP_KPI_COLUMNS)),
        review_queue=pd.DataFrame(review),
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportData, ReportIndex, list[Path]]:
    out = tmp_path_factory.mktemp("iso")
    data = marked_data()
    idx = render_reports(data, out)
    res = send_reports(data, None, con=duckdb.connect(), dry_run=True, outbox_dir=out / "eml")
    return data, idx, res.dry_run_files


def _eml_texts(path: Path) -> list[str]:
    """File name, every header and every decoded part of a .eml file."""
    msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    texts = [path.name, *(f"{k}: {v}" for k, v in msg.items())]
    for part in msg.walk():
        if part.is_multipart():
            continue
        texts.append(str(part.get_content()))
        texts.append(str(part.get_filename() or ""))
    return texts


def _artefacts(outputs: tuple[ReportData, ReportIndex, list[Path]]) -> dict[str, list[tuple[str, str]]]:
    """shop -> [(what, text)] for everything that is sent or handed to that merchant."""
    data, idx, emls = outputs
    arts: dict[str, list[tuple[str, str]]] = {s: [] for s in MARK}
    for shop, path in idx.merchants.items():
        html = path.read_text(encoding="utf-8")
        arts[shop] += [("merchant file name", path.name), ("merchant html", html)]
        arts[shop] += [("chart alt", a) for a in re.findall(r'alt="([^"]*)"', html)]
        assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', html))
    for path in emls:
        to = str(BytesParser(policy=policy.default).parsebytes(path.read_bytes())["To"])
        shop = next(s for s in MARK if to.endswith(f"@{s}.example"))
        arts[shop] += [(f"eml {path.name}", t) for t in _eml_texts(path)]
    return arts


def test_every_merchant_artefact_holds_only_its_own_shop(outputs: tuple[ReportData, ReportIndex, list[Path]]) -> None:
    data, idx, emls = outputs
    assert len(emls) == 6 and set(idx.merchants) == set(MARK)
    arts = _artefacts(outputs)
    checked = 0
    for shop, items in arts.items():
        foreign = [MARK[s] for s in MARK if s != shop] + [s for s in MARK if s != shop]
        foreign += [v for s in MARK if s != shop for v in PII[s].values()]
        for what, text in items:
            for marker in foreign:
                assert marker not in text, (shop, what, marker)
                checked += 1
        joined = "\n".join(t for _, t in items)
        # not vacuous: the shop's own people, words and findings are there
        for own in (f"{MARK[shop]}店", f"agent-{MARK[shop]}-0", f"{MARK[shop]}evidence1", f"{MARK[shop]}evidence0",
                    f"{MARK[shop]}explain"):
            assert own in joined, (shop, own)
    assert checked > 1000


@pytest.mark.parametrize("shop", list(MARK))
def test_merchant_artefacts_mask_personal_data(outputs: tuple[ReportData, ReportIndex, list[Path]], shop: str) -> None:
    data, idx, _ = outputs
    items = _artefacts(outputs)[shop]
    assert len(items) > 10
    secrets = [*PII[shop].values(), f"buyer{MARK[shop]}0", PII[shop]["phone"].replace(" ", "")]
    for what, text in items:
        for secret in secrets:
            assert secret not in text, (shop, what, secret)
    # the same page unmasked shows them: the check above is not vacuous
    raw_html = render_merchant(data, shop, mask=None, email=True)
    assert all(v in raw_html for v in PII[shop].values())


def test_coaching_pack_masks_personal_data_and_buyer_names(outputs: tuple[ReportData, ReportIndex, list[Path]]) -> None:
    data, idx, _ = outputs
    html = idx.coaching.read_text(encoding="utf-8")
    n = 0
    for shop in MARK:
        assert f"{MARK[shop]}msg0" in html and f"{MARK[shop]}msg1" in html  # all conversations are in
        for secret in [*PII[shop].values(), f"buyer{MARK[shop]}0", PII[shop]["phone"].replace(" ", "")]:
            assert secret not in html, (shop, secret)
            n += 1
        assert buyer_alias(f"buyer{MARK[shop]}0") in html
    assert n == 21
    # internal agent pages are not masked (the QA team needs the facts): proves the data is there
    agent = idx.agents[f"agent-{MARK['shop-bravo']}-0"].read_text(encoding="utf-8")
    assert PII["shop-bravo"]["id_card"] in agent and "buyerQZBRAVO0" in agent
