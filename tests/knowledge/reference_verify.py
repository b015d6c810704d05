"""A plain restatement of ``verify_knowledge`` for the equivalence tests: one conversation at a
time, every message analysed from scratch (``analyse_message`` without a cache, mentions,
implied claims, deflections and FAQ coverage recomputed each time), findings as dict records.

No per-text tables, no plans, no shared verdicts, no row skipping: if the fast walk in
``qa_inspect.knowledge.verify`` ever decides differently, the tests that compare the two fail.
FAQ matches come from ``FaqIndex.match_many`` (compared with a per-message sklearn reference
in test_kb_speed_paths.py).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from qa_inspect import schema
from qa_inspect.knowledge import KnowledgeBase
from qa_inspect.knowledge.faq import fact_covered
from qa_inspect.knowledge.verify import (
    FAQ_MAX_REPLIES,
    HAS_RE,
    NONE_RE,
    POINTS_CONFIRMED,
    POINTS_DEFLECT,
    POINTS_FAQ_MISS,
    POINTS_FAQ_OK,
    POINTS_MAJOR,
    POINTS_MINOR,
    Q_BLOCK,
    UPSELL_RE,
    YES_RE,
    _can_answer,
    _candidates,
    _local_day,
    analyse_message,
    find_deflection,
    implied_claims,
    mentions,
    topics_answerable,
)
from qa_inspect.text.normalize import normalize_text


def reference_findings(partition: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> pd.DataFrame:
    df = partition.sort_values([schema.CONVERSATION_ID, schema.SEQ], kind="stable").reset_index(drop=True)
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    for r in rows:
        text = r[schema.TEXT] if isinstance(r[schema.TEXT], str) else ""
        norm = r.get(schema.NORM_TEXT)
        r["_text"] = text
        r["_norm"] = norm if isinstance(norm, str) and len(norm) == len(text) else normalize_text(text)
        r["_hit"] = None
    for shop, kb in kbs.items():  # FAQ matches: one batch per shop (the batch equals one by one: tested)
        asked = [r for r in rows if r[schema.SHOP_ID] == shop and r[schema.ROLE] == "customer" and r["_norm"].strip()]
        if kb.faq_index is not None and asked:
            toks = [list(r[schema.TOKENS]) if isinstance(r.get(schema.TOKENS), list) else None for r in asked]
            for r, hit in zip(asked, kb.faq_index.match_many([r["_norm"] for r in asked], toks), strict=True):
                r["_hit"] = hit
    records: list[dict] = []
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end][schema.CONVERSATION_ID] == rows[start][schema.CONVERSATION_ID]:
            end += 1
        conv = rows[start:end]
        kb = kbs.get(str(conv[0][schema.SHOP_ID]))
        if kb is not None:
            first = next((r[schema.TS] for r in conv if r[schema.TS] is not None), None)
            day = _local_day(pd.Timestamp(first), kb.timezone) if first is not None else None
            records.extend(_conversation(conv, kb, day))
        start = end
    return schema.findings_frame(records)


def _later(kb: KnowledgeBase, conv: list[dict]) -> list[str]:
    for want in ("customer", "agent"):
        for r in conv:
            if r[schema.ROLE] == want:
                ms = mentions(kb, r["_norm"])
                if ms and not (want == "agent" and UPSELL_RE.search(r["_norm"])):
                    return list(ms[0].skus)
    return []


def _record(r: dict, rule: str, pol: str, sev: str, pts: float, s: int, e: int, expl: str, conf: float) -> dict:
    return {schema.CONVERSATION_ID: r[schema.CONVERSATION_ID], schema.SHOP_ID: r[schema.SHOP_ID],
            schema.AGENT_ID: r[schema.AGENT_ID], schema.MESSAGE_INDEX: int(r[schema.SEQ]), schema.RULE_ID: rule,
            schema.DIMENSION: "product_knowledge", schema.POLARITY: pol, schema.SEVERITY: sev,
            schema.POINTS: pts, schema.EVIDENCE: r["_text"][s:e] if s >= 0 else "", schema.EVIDENCE_START: s,
            schema.EVIDENCE_END: e, schema.EXPLANATION: expl, schema.SOURCE: "knowledge", schema.CONFIDENCE: conf}


def _conversation(conv: list[dict], kb: KnowledgeBase, day: dt.date | None) -> list[dict]:
    out: list[dict] = []
    hits = {i: r["_hit"] for i, r in enumerate(conv) if r[schema.ROLE] == "customer"}
    focus: list[str] = []
    agent_recent: list[str] = []
    last_sku: str | None = None
    q_block: list[int] = []
    confirmed: set[int] = set()
    contradicted: set[int] = set()
    pending: list[tuple[int, tuple[int, float]]] = []
    for i, r in enumerate(conv):
        sku = r.get(schema.SKU)
        sku = None if sku is None else str(sku)
        if sku is not None and sku != last_sku and sku in kb.products:
            focus, last_sku = [sku], sku
        norm = r["_norm"]
        if r[schema.ROLE] == "customer":
            ms = mentions(kb, norm)
            if ms:
                focus = _candidates(ms[-1], focus + agent_recent)
                agent_recent = []
            if norm.strip():
                q_block = (q_block + [i])[-Q_BLOCK:]
                hit = hits[i]
                if hit is not None and kb.faq_skus[hit[0]] and not kb.faq_skus[hit[0]] & set(focus or _later(kb, conv)):
                    hits[i] = hit = None
                if hit is not None:
                    pending.append((i, hit))
            continue
        if r[schema.ROLE] != "agent" or bool(r.get(schema.IS_AUTO_REPLY)):
            continue
        if agent_recent:
            context = focus + [s for s in agent_recent if s not in focus]
        else:
            context = focus or _later(kb, conv)
        yes_no = bool(YES_RE.search(norm) or HAS_RE.search(norm) or NONE_RE.search(norm))
        implied = implied_claims(kb, conv[q_block[-1]]["_norm"], norm) if q_block and yes_no else []
        results, mentioned = analyse_message(kb, r["_text"], norm, day, context, implied)
        if mentioned:
            agent_recent = list(mentioned)
        for res in results:
            v = res.verdict
            if v.status == "contradicted":
                contradicted.add(i)
                out.append(_record(r, res.rule_id, "-", v.severity, POINTS_MAJOR if v.severity == "major"
                                   else POINTS_MINOR, res.claim.start, res.claim.end, v.explanation, 0.9))
            elif v.status == "confirmed":
                confirmed.add(i)
                out.append(_record(r, res.rule_id, "+", "info", POINTS_CONFIRMED, res.claim.start, res.claim.end,
                                   v.explanation, 0.9))
        m = find_deflection(norm)
        if m and q_block and i not in confirmed:
            answers = topics_answerable(kb, " ".join(conv[j]["_norm"] for j in q_block), context, day)
            faq = [hits[j] for j in q_block if hits.get(j) is not None]
            if faq:
                answers.append(("faq", kb.faq[faq[-1][0]].answer))  # type: ignore[index]
            if answers:
                asked = " / ".join(conv[j]["_text"][:30] for j in q_block)
                out.append(_record(r, "KB-DEFLECT", "-", "major", POINTS_DEFLECT, m.start(), m.end(),
                                   f"买家问「{asked}」，客服推托「{r['_text'][m.start():m.end()]}」；知识库可答: "
                                   + "；".join(a for _, a in answers[:2]), 0.8))
                q_block = []
        if results:
            q_block = []
    for qi, hit in pending:
        out.extend(_faq(kb, conv, qi, hit, confirmed | contradicted))
    return out


def _faq(kb: KnowledgeBase, conv: list[dict], i: int, hit: tuple[int, float], checked: set[int]) -> list[dict]:
    entry = kb.faq[hit[0]]
    if not entry.key_facts:
        return []
    replies: list[int] = []
    for j in range(i + 1, len(conv)):
        role = conv[j][schema.ROLE]
        if role == "customer":
            break
        if role == "agent" and not bool(conv[j].get(schema.IS_AUTO_REPLY)) and _can_answer(conv[j]["_norm"]):
            replies.append(j)
            if len(replies) >= FAQ_MAX_REPLIES:
                break
    if not replies:
        return []
    answer = " ".join(conv[j]["_norm"] for j in replies)
    if find_deflection(answer):
        return []
    covered = [f for f in entry.key_facts if fact_covered(f, answer)]
    missing = [f for f in entry.key_facts if f not in covered]
    sim = f"{hit[1]:.2f}"
    expl = (f"买家问题匹配 FAQ「{entry.question}」(相似度 {sim})；关键信息 {'、'.join(entry.key_facts)}；"
            f"已答 {'、'.join(covered) or '无'}；缺少 {'、'.join(missing) or '无'}")
    first = conv[replies[0]]
    if not covered:
        if any(j in checked for j in replies):
            return []
        return [_record(first, "KB-FAQ", "-", "minor", POINTS_FAQ_MISS, 0, len(first["_text"]), expl, 0.7)]
    return [_record(first, "KB-FAQ", "+", "info", round(POINTS_FAQ_OK * len(covered) / len(entry.key_facts), 2),
                    0, len(first["_text"]), expl, 0.7)]
