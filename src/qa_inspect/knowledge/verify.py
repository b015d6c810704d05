"""Verify agent claims against the shop KB; find deflections and FAQ answers missing key facts.

Decision per claim: confirmed | contradicted | unverifiable (no finding). A claim is checked
against the product under discussion: the nearest product named before it in the same message,
else the conversation's current product (the most recent one named by either side, or the
export's sku), else the first product named after it. A short generic alias ("枕头") keeps the
previous product as a fallback candidate: the claim is confirmed if it holds for any candidate
and contradicted only when it fails for the first one and holds for none.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pandas as pd

from qa_inspect import schema
from qa_inspect.knowledge.base import MATERIAL_TERMS, NORM_MATERIAL_TERMS, KnowledgeBase
from qa_inspect.knowledge.claims import Claim, extract_claims
from qa_inspect.knowledge.faq import fact_covered
from qa_inspect.knowledge.numbers import fmt_num
from qa_inspect.text.normalize import normalize_text

DIMENSION = "product_knowledge"
SOURCE = "knowledge"
RULE_OF_KIND = {
    "price": "KB-PRICE", "promo": "KB-PRICE", "coupon": "KB-PRICE", "discount": "KB-PRICE",
    "material": "KB-MATERIAL", "material_pct": "KB-MATERIAL", "spec": "KB-SPEC",
    "warranty": "KB-WARRANTY", "return": "KB-RETURN", "dispatch": "KB-DISPATCH",
    "free_shipping": "KB-SHIPPING", "shipping_fee": "KB-SHIPPING", "freight_insurance": "KB-SHIPPING",
    "stock": "KB-STOCK", "gift": "KB-GIFT",
}
MAJOR_KINDS = frozenset({"price", "promo", "material", "material_pct", "warranty", "return"})
POINTS_MAJOR, POINTS_MINOR, POINTS_CONFIRMED = 10.0, 5.0, 2.0
POINTS_DEFLECT, POINTS_FAQ_MISS, POINTS_FAQ_OK = 8.0, 4.0, 2.0
PRODUCT_KINDS = frozenset({"price", "discount", "material", "material_pct", "spec", "warranty",
                           "dispatch", "stock", "gift"})
WEAK_ALIAS_LEN = 2  # a mention this short ("枕头", "面膜") may not be a switch of product

DEFLECT_RE = re.compile(
    r"(?:不太清楚|不是很清楚|不清楚|不知道(?!\s*(?:您|你|亲))|不太了解|不了解|不确定|说不好|不好说|不太懂|不晓得|"
    r"(?:自己|自行)\s*(?:看|查看|查)(?:一下|下)?(?:详情页?|页面|宝贝详情)?|看(?:一下|下)?详情页?|"
    r"(?:详情页?|商品页|商品说明|宝贝详情|页面)\s*(?:上|里|中)?\s*(?:有|都有|写|为准)|以(?:详情页?|商品页|商品说明|页面)为准|"
    r"参考(?:一下|下)?(?:商品)?(?:详情页?|商品页|说明)|往下翻)"
)
TOPICS: dict[str, re.Pattern[str]] = {
    "price": re.compile(r"多少钱|价格|价钱|几块|什么价|啥价|优惠|便宜|活动价|多少米|售价|特价|打折|折扣|现在多少"),
    "material": re.compile(r"材质|面料|什么料|料子|纯棉|什么棉|什么绒|成分|是棉|什么材料|外壳|真丝吗|什么做的"),
    "warranty": re.compile(r"保修|保固|质保|坏了|售后"),
    "return": re.compile(r"退换|退货|无理由|鉴赏期|能退|可以退|退吗|换货|想退|要退|退款"),
    "dispatch": re.compile(r"发货|出货|什么时候发|多久发|几天发|寄出|几天到|多久到"),
    "shipping": re.compile(r"包邮|运费|免运|邮费|运费险"),
    "stock": re.compile(r"有货|现货|库存|有没有货|缺货|还有吗|补货|到货|断货"),
    "gift": re.compile(r"赠品|送什么|有送|赠送|送吗|有礼物"),
    "spec": re.compile(r"尺寸|多大|容量|续航|规格|多重|功率|防水|几片|多高|几支|克重|spf|多少毫升|多少ml|多少w"),
}


@dataclass
class Verdict:
    status: str  # confirmed | contradicted | unverifiable
    explanation: str = ""
    sku: str | None = None
    severity: str = "info"


@dataclass
class ClaimResult:
    claim: Claim
    verdict: Verdict
    rule_id: str


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(1.0, 0.005 * max(a, b))


def valid_prices(kb: KnowledgeBase, sku: str, day: dt.date | None) -> list[tuple[float, str]]:
    """Every price an agent may correctly quote on ``day``: list, valid promo, after 满减/券/折."""
    p = kb.products[sku]
    bases: list[tuple[float, str]] = []
    if p.price:
        bases.append((p.price, "售价"))
    if p.promo_price and p.promo_active(day):
        bases.append((p.promo_price, "活动价"))
    promos = kb.promotions_on(day)
    out = list(bases)
    for b, label in bases:
        reductions = []
        for pr in promos:
            if pr.kind == "discount" and pr.rate:
                out.append((round(b * pr.rate, 2), f"{label}×{pr.name}"))
            elif pr.amount and b >= (pr.threshold or 0):
                reductions.append(pr)
                out.append((b - pr.amount, f"{label}-{pr.name}"))
        for i, a in enumerate(reductions):
            for c in reductions[i + 1:]:
                if a.kind != c.kind and b >= max(a.threshold or 0, c.threshold or 0):
                    out.append((b - a.amount - c.amount, f"{label}-{a.name}-{c.name}"))  # type: ignore[operator]
    return out


def _judge_product(claim: Claim, kb: KnowledgeBase, sku: str, day: dt.date | None, said: str) -> Verdict:
    p = kb.products[sku]
    k = claim.kind
    if k == "price":
        valid = valid_prices(kb, sku, day)
        if not valid:
            return Verdict("unverifiable")
        v = float(claim.value)  # type: ignore[arg-type]
        for val, label in valid:
            if _close(v, val):
                return Verdict("confirmed", f"报价 {kb.money(v)} = {label} {kb.money(val)}（{p.name}）", sku)
        lo, hi = min(x for x, _ in valid), max(x for x, _ in valid)
        if not (0.3 * lo <= v <= 3 * hi):
            return Verdict("unverifiable")  # far off: most likely the price of something else
        note = ""
        if p.promo_price and _close(v, p.promo_price) and not p.promo_active(day):
            note = "，活动价不在活动期内"
        return Verdict("contradicted", f"报价 {kb.money(v)}{note}，知识库: {kb.price_text(sku, day)}", sku, "major")
    if k == "discount":
        r = float(claim.value)  # type: ignore[arg-type]
        for pr in kb.promotions_on(day):
            if pr.kind == "discount" and pr.rate and abs(pr.rate - r) < 0.005:
                return Verdict("confirmed", f"{fmt_num(r * 10)}折 = {pr.name}", sku)
        if p.price and p.promo_price and p.promo_active(day) and abs(p.promo_price / p.price - r) <= 0.03:
            return Verdict("confirmed", f"{fmt_num(r * 10)}折 ≈ 活动价/售价（{kb.price_text(sku, day)}）", sku)
        if not p.price:
            return Verdict("unverifiable")
        acts = "、".join(x.name for x in kb.promotions_on(day)) or "无"
        return Verdict("contradicted", f"说 {fmt_num(r * 10)} 折，知识库: {kb.price_text(sku, day)}；当日活动: {acts}",
                       sku, "major")
    if k == "dispatch":
        if p.dispatch_hours is None:
            return Verdict("unverifiable")
        v, kbv = float(claim.value), p.dispatch_hours  # type: ignore[arg-type]
        ok = kbv <= 24 if claim.extra.get("same_day") else abs(v - kbv) < 0.5
        if ok:
            return Verdict("confirmed", f"发货时效 {said} = 知识库 {fmt_num(kbv)} 小时（{p.name}）", sku)
        sev = "major" if v < kbv else "minor"
        return Verdict("contradicted", f"承诺「{said}」，知识库: {p.name} 付款后 {fmt_num(kbv)} 小时内发货", sku, sev)
    if k == "warranty":
        if p.warranty_months is None:
            return Verdict("unverifiable")
        v = float(claim.value)  # type: ignore[arg-type]
        if abs(v - p.warranty_months) < 0.01:
            return Verdict("confirmed", f"保修「{said}」= 知识库 {fmt_num(p.warranty_months)} 个月（{p.name}）", sku)
        return Verdict("contradicted", f"说保修「{said}」，知识库: {p.name} 保修 {fmt_num(p.warranty_months)} 个月",
                       sku, "major")
    if k == "stock":
        if p.stock is None:
            return Verdict("unverifiable")
        has = p.stock > 0
        if bool(claim.value) == has:
            return Verdict("confirmed", f"库存说法「{said}」与知识库一致（{p.name} 库存 {p.stock}）", sku)
        return Verdict("contradicted", f"说「{said}」，知识库: {p.name} 库存 {p.stock}", sku, "minor")
    if k == "gift":
        if not p.gifts:
            return Verdict("unverifiable")
        g = str(claim.value)
        for gift in p.gifts:
            if _similar(normalize_text(gift), g):
                return Verdict("confirmed", f"赠品「{said}」= 知识库赠品 {gift}（{p.name}）", sku)
        return Verdict("contradicted", f"说送「{g}」，知识库: {p.name} 赠品 {'、'.join(p.gifts)}", sku, "minor")
    if k == "material":
        fams = kb.material_families.get(sku)
        if not fams:
            return Verdict("unverifiable")
        if MATERIAL_TERMS.get(str(claim.value), frozenset()) & fams:
            return Verdict("confirmed", f"材质「{said}」与知识库一致: {p.material}（{p.name}）", sku)
        return Verdict("contradicted", f"说材质「{said}」，知识库: {p.name} 材质 {p.material}", sku, "major")
    if k == "material_pct":
        term = str(claim.extra.get("term", ""))
        for pct, kbterm in kb.material_pcts.get(sku, []):
            if _related(term, kbterm):
                if abs(pct - float(claim.value)) < 0.01:  # type: ignore[arg-type]
                    return Verdict("confirmed", f"「{said}」与知识库一致: {p.material}（{p.name}）", sku)
                return Verdict("contradicted", f"说「{said}」，知识库: {p.name} 材质 {p.material}", sku, "major")
        return Verdict("unverifiable")
    if k == "spec":
        unit = str(claim.extra.get("unit"))
        vals = kb.spec_values.get(sku, {}).get(unit)
        if not vals:
            return Verdict("unverifiable")
        v = float(claim.value)  # type: ignore[arg-type]
        if any(abs(v - x) < 0.01 for x in vals):
            return Verdict("confirmed", f"规格「{said}」与知识库一致（{p.name}）", sku)
        spec = "；".join(f"{a}={b}" for a, b in p.specs.items())
        return Verdict("contradicted", f"说「{said}」，知识库: {p.name} {spec}", sku, "minor")
    return Verdict("unverifiable")


def _related(a: str, b: str) -> bool:
    """Do two ingredient/material names refer to the same thing? (shared 2-char run, or 1-char name)."""
    if not a or not b:
        return False
    if len(b) == 1:
        return b in a
    if len(a) == 1:
        return a in b
    return any(b[i:i + 2] in a for i in range(len(b) - 1))


def _similar(kb_item: str, said: str) -> bool:
    if kb_item in said or said in kb_item:
        return True
    grams = {said[i:i + 2] for i in range(len(said) - 1)}
    if not grams:
        return False
    return sum(g in kb_item for g in grams) / len(grams) >= 0.5


def _judge_policy(claim: Claim, kb: KnowledgeBase, day: dt.date | None, said: str) -> Verdict:
    pol = kb.policies
    k = claim.kind
    v = claim.value
    if k == "return":
        if pol.return_days is None:
            return Verdict("unverifiable")
        kind = pol.return_kind or f"{pol.return_days}天"
        if abs(float(v) - pol.return_days) < 0.01:  # type: ignore[arg-type]
            return Verdict("confirmed", f"「{said}」= 知识库 {kind}")
        return Verdict("contradicted", f"说「{said}」，知识库: {kind}（{pol.return_days} 天）", severity="major")
    if k == "free_shipping":
        t = pol.free_shipping_threshold
        if t is None:
            return Verdict("unverifiable")
        if abs(float(v) - t) < 0.01:  # type: ignore[arg-type]
            return Verdict("confirmed", f"「{said}」= 知识库 满 {kb.money(t)} 包邮")
        return Verdict("contradicted", f"说「{said}」，知识库: 满 {kb.money(t)} 包邮，运费 "
                       f"{kb.money(pol.shipping_fee) if pol.shipping_fee is not None else '未知'}", severity="minor")
    if k == "shipping_fee":
        if pol.shipping_fee is None:
            return Verdict("unverifiable")
        if abs(float(v) - pol.shipping_fee) < 0.01:  # type: ignore[arg-type]
            return Verdict("confirmed", f"「{said}」= 知识库运费 {kb.money(pol.shipping_fee)}")
        return Verdict("contradicted", f"说「{said}」，知识库: 运费 {kb.money(pol.shipping_fee)}"
                       + (f"（满 {kb.money(pol.free_shipping_threshold)} 包邮）" if pol.free_shipping_threshold else ""),
                       severity="minor")
    if k == "freight_insurance":
        if pol.freight_insurance is None:
            return Verdict("unverifiable")
        if bool(v) == pol.freight_insurance:
            return Verdict("confirmed", f"运费险说法与知识库一致（{'有' if pol.freight_insurance else '无'}运费险）")
        return Verdict("contradicted", f"说「{said}」，知识库: {'赠送' if pol.freight_insurance else '不提供'}运费险",
                       severity="minor")
    if k in ("promo", "coupon"):
        amount = float(v)  # type: ignore[arg-type]
        thr = claim.extra.get("threshold")
        active = [p for p in kb.promotions_on(day) if p.kind in ("full_reduction", "coupon") and p.amount]
        all_red = [p for p in pol.promotions if p.kind in ("full_reduction", "coupon") and p.amount]
        if not all_red:
            return Verdict("unverifiable")
        listing = "、".join(p.name for p in active) or "当日无满减/券"
        if thr is not None:
            same_t = [p for p in active if p.threshold is not None and abs(p.threshold - float(thr)) < 0.01]
            if any(abs(p.amount - amount) < 0.01 for p in same_t):  # type: ignore[operator]
                return Verdict("confirmed", f"「{said}」= 知识库活动 {same_t[0].name}")
        else:
            match = [p for p in active if abs(p.amount - amount) < 0.01]  # type: ignore[operator]
            if match:
                return Verdict("confirmed", f"「{said}」= 知识库活动 {match[0].name}")
        expired = [p for p in all_red if p not in active and abs(p.amount - amount) < 0.01  # type: ignore[operator]
                   and (thr is None or (p.threshold is not None and abs(p.threshold - float(thr)) < 0.01))]
        why = f"（{expired[0].name} 有效期 {expired[0].start}~{expired[0].end}）" if expired else ""
        return Verdict("contradicted", f"说「{said}」{why}，知识库当日活动: {listing}", severity="major")
    return Verdict("unverifiable")


def judge(claim: Claim, kb: KnowledgeBase, candidates: list[str], day: dt.date | None, said: str) -> Verdict:
    """Decide one claim. Product claims try each candidate product (see module docstring)."""
    if claim.kind not in PRODUCT_KINDS:
        return _judge_policy(claim, kb, day, said)
    verdicts = [_judge_product(claim, kb, s, day, said) for s in candidates if s in kb.products]
    if not verdicts:
        return Verdict("unverifiable")
    for v in verdicts:
        if v.status == "confirmed":
            return v
    if all(v.status == "contradicted" for v in verdicts):
        return verdicts[0]
    return Verdict("unverifiable")


# --- message-level analysis ----------------------------------------------------------------


@dataclass
class Mention:
    start: int
    end: int
    skus: tuple[str, ...]
    weak: bool


STRONG_MATERIAL_CUE = re.compile(r"(?:成分|主要|材质|面料|填充|含有|采用|用的)\s*(?:是|为|有)?\s*$")
UPSELL_RE = re.compile(r"升级|推荐|考虑|搭配|看看|加\s*\d+\s*元|多加|也很不错|一起买")


def mentions(kb: KnowledgeBase, norm: str) -> list[Mention]:
    """Product mentions, except an alias that is also a material/ingredient right after a material
    cue ("主要是A醇": the ingredient, not the A醇晚霜)."""
    out = []
    for s, e, skus, key in kb.find_products(norm):
        if key in NORM_MATERIAL_TERMS and STRONG_MATERIAL_CUE.search(norm[max(0, s - 6):s]):
            continue
        if norm[max(0, s - 1):s].strip() == "+" or norm[e:e + 1] == "+":
            continue  # "洁颜慕斯+化妆水+精华+乳液": the contents of a set, not products under discussion
        out.append(Mention(s, e, skus, len(key) <= WEAK_ALIAS_LEN))
    return out


def _candidates(m: Mention, context: list[str]) -> list[str]:
    c = list(m.skus)
    if m.weak:
        c += [s for s in context if s not in c]
    return c


def analyse_message(kb: KnowledgeBase, text: str, norm: str | None, day: dt.date | None,
                    context: list[str], implied: Iterable[Claim] = (),
                    cache: dict | None = None) -> tuple[list[ClaimResult], list[str]]:
    """Claims of one agent message with verdicts, and the products this message named last.

    ``context``: candidate products of the conversation so far; ``implied``: claims the message
    makes by answering a yes/no question ("是纯棉的吗" -> "是的"). ``cache``: a dict owned by
    the caller (one per partition) for the text-only part: mentions and extracted claims.
    """
    norm = norm if norm is not None and len(norm) == len(text) else normalize_text(text)
    key = ("c", kb.shop_id, norm)
    got = cache.get(key) if cache is not None else None
    if got is None:
        ms0 = _cached_mentions(kb, norm, cache) if cache is not None else mentions(kb, norm)
        got = (ms0, extract_claims(norm, [(m.start, m.end) for m in ms0], kb.find_materials))
        if cache is not None:
            cache[key] = got
    ms, claims = got[0], list(got[1])
    gifts = [(c.start, c.end) for c in claims if c.kind == "gift"]
    ms = [m for m in ms if not any(a <= m.start and m.end <= b for a, b in gifts)]  # a gift is no switch
    taken = {c.kind for c in claims}
    claims += [c for c in implied if c.kind not in taken]
    results = []
    for c in claims:
        before = [m for m in ms if m.end <= c.start]
        if before:
            cands = _candidates(before[-1], context)
        elif context:
            cands = list(context)
        else:
            after = [m for m in ms if m.start >= c.end]
            cands = list(after[0].skus) if after else []
        said = text[c.start:c.end]
        if c.extra.get("implied"):
            said = f"{said}（答「{c.extra['implied']}」）"
        if c.kind == "spec":
            owners = kb.owners_of(norm[c.start:c.end])
            if owners and not owners & set(cands):
                continue  # "60支" naming another product ("升级成60支的"), not a spec claim
        results.append(ClaimResult(c, judge(c, kb, cands, day, said), RULE_OF_KIND[c.kind]))
    mentioned = _candidates(ms[-1], context) if ms else []
    return results, mentioned


def message_verdict(results: Iterable[ClaimResult]) -> str:
    """contradicted if any claim is; else confirmed if any is; else none."""
    st = [r.verdict.status for r in results]
    if "contradicted" in st:
        return "contradicted"
    if "confirmed" in st:
        return "confirmed"
    return "none"


YES_RE = re.compile(r"^\s*(?:亲[，,~]?\s*|嗯嗯?[，,]?\s*)?(?:是的|对的|是哦|没错|对哦|是呢|是滴|对滴|是啊)")
HAS_RE = re.compile(r"^\s*(?:亲[，,~]?\s*|嗯嗯?[，,]?\s*)?(?:有的|有哦|有呢|有滴|都有|也有|还有的|有库存)")
NONE_RE = re.compile(r"^\s*(?:亲[，,~]?\s*|不好意思[，,]?\s*|抱歉[，,]?\s*)?(?:没有了|没了|没有哦|卖完了|没货)")
YESNO_RE = re.compile(r"吗|么|嘛|\?|是不是|有没有")


_QUOTE_OPEN, _QUOTE_CLOSE = "“「『\"'", "”」』\"'"
DEFLECT_NOT_BEFORE = re.compile(r"(?:没有|没|什么|不会|有|哪里|哪些)\s*$")
DEFLECT_NOT_AFTER = re.compile(r"^\s*(?:的地方|的话|吗|嘛|\?)")


def find_deflection(norm: str) -> re.Match[str] | None:
    """A dodge phrase the agent says in their own voice (not quoting the buyer, not "还有什么不清楚的吗")."""
    for m in DEFLECT_RE.finditer(norm):
        before = norm[:m.start()]
        opens = max((before.rfind(q) for q in _QUOTE_OPEN), default=-1)
        closes = max((before.rfind(q) for q in _QUOTE_CLOSE if q not in "\"'"), default=-1)
        if opens > closes or before.count('"') % 2 == 1:
            continue  # inside quotes: the agent repeats the buyer's words
        if DEFLECT_NOT_BEFORE.search(norm[max(0, m.start() - 3):m.start()]) or \
                DEFLECT_NOT_AFTER.match(norm[m.end():m.end() + 3]):
            continue
        return m
    return None


def implied_claims(kb: KnowledgeBase, question: str, answer: str) -> list[Claim]:
    """Claims made by a short yes/no answer to the buyer's question (both normalised)."""
    if not YESNO_RE.search(question):
        return []
    out: list[Claim] = []
    if TOPICS["stock"].search(question):
        m = HAS_RE.search(answer)
        if m:
            out.append(Claim("stock", m.start(), m.end(), True, {"implied": "有货"}))
        else:
            m = NONE_RE.search(answer)
            if m:
                out.append(Claim("stock", m.start(), m.end(), False, {"implied": "没货"}))
    m = YES_RE.search(answer)
    if m:
        blocked = [(a, b) for a, b, _, _ in kb.find_products(question)]
        terms = [t for a, b, t in kb.find_materials(question) if all(b <= x or a >= y for x, y in blocked)]
        if len(set(terms)) == 1 and not re.search(r"还是|或者|或是", question):
            out.append(Claim("material", m.start(), m.end(), terms[0], {"implied": terms[0]}))
    return out


def topics_answerable(kb: KnowledgeBase, question_norm: str, cands: list[str],
                      day: dt.date | None) -> list[tuple[str, str]]:
    """(topic, KB answer) for each topic of a buyer question that the KB can answer."""
    out = []
    pol = kb.policies
    prods = [kb.products[s] for s in cands if s in kb.products]
    p = prods[0] if prods else None
    for topic, rx in TOPICS.items():
        if not rx.search(question_norm) and not (topic == "material" and kb.find_materials(question_norm)):
            continue
        ans: str | None = None
        if topic == "price" and p and p.price:
            ans = kb.price_text(p.sku, day)
        elif topic == "material" and p and p.material:
            ans = f"{p.name} 材质 {p.material}"
        elif topic == "warranty" and p and p.warranty_months is not None:
            ans = f"{p.name} 保修 {fmt_num(p.warranty_months)} 个月"
        elif topic == "return" and pol.return_days is not None:
            ans = pol.return_kind or f"{pol.return_days} 天无理由"
        elif topic == "dispatch" and p and p.dispatch_hours:
            ans = f"{p.name} 付款后 {fmt_num(p.dispatch_hours)} 小时内发货"
        elif topic == "shipping" and pol.free_shipping_threshold is not None:
            ans = f"满 {kb.money(pol.free_shipping_threshold)} 包邮，运费 {kb.money(pol.shipping_fee or 0)}"
        elif topic == "stock" and p and p.stock is not None:
            ans = f"{p.name} {'有货' if p.stock > 0 else '缺货'}（库存 {p.stock}）"
        elif topic == "gift" and p and p.gifts:
            ans = f"{p.name} 赠品 {'、'.join(p.gifts)}"
        elif topic == "spec" and p and (p.specs or p.sizes):
            ans = f"{p.name} " + "；".join(f"{a}={b}" for a, b in p.specs.items())
        if ans:
            out.append((topic, ans))
    return out


def conversation_day(ts: pd.Series, tz: str) -> dt.date | None:
    """Shop-local date the chat started (promotions are valid by date); None without timestamps,
    in which case a promo price gets the benefit of the doubt."""
    valid = ts.dropna()
    if valid.empty:
        return None
    return _local_day(valid.iloc[0], tz)


def _local_day(t: pd.Timestamp, tz: str) -> dt.date:
    return t.tz_convert(ZoneInfo(tz)).date() if t.tzinfo else t.date()


def _na(v: object) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


@dataclass
class _Msgs:
    """Column lists of one sorted partition: read by position, never row by row from pandas
    (``iterrows`` and per-conversation ``iloc`` were most of this stage's time)."""

    texts: list[str]
    norms: list[str]
    roles: list
    cids: list
    shops: list
    agents: list
    seqs: list[int]
    skus: list
    auto: list


def _record(m: _Msgs, i: int, rule_id: str, polarity: str, severity: str, points: float, start: int, end: int,
            explanation: str, confidence: float) -> dict:
    text = m.texts[i]
    return {
        schema.CONVERSATION_ID: m.cids[i],
        schema.SHOP_ID: m.shops[i],
        schema.AGENT_ID: m.agents[i],
        schema.MESSAGE_INDEX: m.seqs[i],
        schema.RULE_ID: rule_id,
        schema.DIMENSION: DIMENSION,
        schema.POLARITY: polarity,
        schema.SEVERITY: severity,
        schema.POINTS: points,
        schema.EVIDENCE: text[start:end] if start >= 0 else "",
        schema.EVIDENCE_START: start,
        schema.EVIDENCE_END: end,
        schema.EXPLANATION: explanation,
        schema.SOURCE: SOURCE,
        schema.CONFIDENCE: confidence,
    }


def _cached_mentions(kb: KnowledgeBase, norm: str, cache: dict) -> list[Mention]:
    key = ("m", kb.shop_id, norm)
    ms = cache.get(key)
    if ms is None:
        ms = cache[key] = mentions(kb, norm)
    return ms


def verify_knowledge(partition: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> pd.DataFrame:
    """Findings (schema.FINDING_COLUMNS, source="knowledge", dimension="product_knowledge").

    Input: messages of whole conversations (schema.MESSAGE_COLUMNS; ``norm_text`` and ``tokens``
    used when present). Output: one finding per confirmed (+, small points) or contradicted (-)
    claim, per deflection of a KB-answerable question (KB-DEFLECT), and per FAQ question whose
    answer states none (-) or some/all (+) of the FAQ key facts (KB-FAQ). Shops without a KB
    produce nothing; rows are never dropped (findings are a new frame).
    """
    schema.require_columns(partition, [schema.CONVERSATION_ID, schema.SHOP_ID, schema.SEQ, schema.ROLE,
                                       schema.TEXT, schema.TS, schema.AGENT_ID], "knowledge")
    if partition.empty:
        return schema.empty_findings()
    df = partition.sort_values([schema.CONVERSATION_ID, schema.SEQ], kind="stable")
    n = len(df)
    texts = df[schema.TEXT].astype("object").where(df[schema.TEXT].notna(), "").astype(str).tolist()
    if schema.NORM_TEXT in df.columns:
        raw = df[schema.NORM_TEXT].astype("object").tolist()
        norms = [n if isinstance(n, str) and len(n) == len(t) else normalize_text(t) for n, t in zip(raw, texts,
                                                                                                     strict=True)]
    else:
        norms = [normalize_text(t) for t in texts]
    tokens = df[schema.TOKENS].tolist() if schema.TOKENS in df.columns else [None] * n
    roles = df[schema.ROLE].astype("object").tolist()
    shops = df[schema.SHOP_ID].astype("object").tolist()
    # FAQ matching for every buyer message of a shop in one batch (per-message sklearn calls are slow)
    faq_hits: dict[int, tuple[int, float] | None] = {}
    for shop_id, kb in kbs.items():
        if kb.faq_index is None:
            continue
        idx = [i for i, (r, sh) in enumerate(zip(roles, shops, strict=True)) if r == "customer" and sh == shop_id
               and norms[i].strip()]
        toks = [tokens[i] if isinstance(tokens[i], list) else None for i in idx]
        for i, hit in zip(idx, kb.faq_index.match_many([norms[i] for i in idx], toks), strict=True):
            faq_hits[i] = hit
    cids = df[schema.CONVERSATION_ID].astype("object").tolist()
    msgs = _Msgs(
        texts=texts, norms=norms, roles=roles, cids=cids, shops=shops,
        agents=[None if _na(a) else a for a in df[schema.AGENT_ID].astype("object").tolist()],
        seqs=[int(x) for x in df[schema.SEQ].tolist()],
        skus=df[schema.SKU].astype("object").tolist() if schema.SKU in df.columns else [None] * n,
        auto=df[schema.IS_AUTO_REPLY].tolist() if schema.IS_AUTO_REPLY in df.columns else [False] * n,
    )
    ts = df[schema.TS].tolist()
    # conversation bounds, and each conversation's FAQ hits, in one pass each
    bounds: list[tuple[int, int]] = []
    start = 0
    for i in range(1, n + 1):
        if i == n or cids[i] != cids[start]:
            bounds.append((start, i))
            start = i
    conv_faq: list[dict[int, tuple[int, float] | None]] = [{} for _ in bounds]
    if faq_hits:
        conv_of = [0] * n
        for k, (a, b) in enumerate(bounds):
            conv_of[a:b] = [k] * (b - a)
        for i, h in faq_hits.items():
            k = conv_of[i]
            conv_faq[k][i - bounds[k][0]] = h
    cache: dict = {}  # per call: mentions and claims of a text (chat logs repeat a lot)
    records: list[dict] = []
    for k, (a, b) in enumerate(bounds):
        kb = kbs.get(str(shops[a]))
        if kb is None:
            continue
        first = next((t for t in ts[a:b] if not _na(t)), None)
        day = _local_day(first, kb.timezone) if first is not None else None
        records.extend(_verify_conversation(msgs, a, b, day, conv_faq[k], kb, cache))
    return schema.findings_frame(records)


def _verify_conversation(msgs: _Msgs, a: int, b: int, day: dt.date | None,
                         faq_hits: dict[int, tuple[int, float] | None], kb: KnowledgeBase,
                         cache: dict) -> list[dict]:
    """Walk one conversation (rows ``a:b`` of ``msgs``) in order, tracking the products under discussion.

    The buyer's focus (products the buyer names, or the export's sku) and the products the agent
    named last are both candidates; an agent recommending another product does not make the
    buyer's next question about it. Positions ``i`` are relative to ``a``.
    """
    texts, norms, roles = msgs.texts[a:b], msgs.norms[a:b], msgs.roles[a:b]
    skus, auto = msgs.skus[a:b], msgs.auto[a:b]
    out: list[dict] = []
    focus: list[str] = []
    agent_recent: list[str] = []
    last_sku_field: str | None = None
    q_block: list[int] = []  # buyer messages since the last agent message that answered something
    # No product named yet (Qianniu exports have no sku)? Chats are mostly about one product, so
    # fall back to the first product the buyer (else the agent) names later in the conversation.
    later: list[str] = []
    for want in ("customer", "agent"):
        for j, role in enumerate(roles):
            if role == want and not (want == "agent" and UPSELL_RE.search(norms[j])):
                ms = _cached_mentions(kb, norms[j], cache)
                if ms:
                    later = list(ms[0].skus)
                    break
        if later:
            break
    confirmed_at: set[int] = set()
    contradicted_at: set[int] = set()
    faq_pending: list[tuple[int, tuple[int, float]]] = []
    for i, role in enumerate(roles):
        text, norm = texts[i], norms[i]
        sku = skus[i]
        if sku is not None and not pd.isna(sku) and str(sku) in kb.products and str(sku) != last_sku_field:
            focus, last_sku_field = [str(sku)], str(sku)
        if role == "customer":
            ms = _cached_mentions(kb, norm, cache)
            if ms:
                focus = _candidates(ms[-1], focus + agent_recent)
                agent_recent = []
            if norm.strip():
                q_block = [*q_block[-(Q_BLOCK - 1):], i]
                hit = faq_hits.get(i)
                # an FAQ about a named product ("磁吸充电宝什么时候有货") only for that product
                if hit is not None and kb.faq_skus[hit[0]] and not kb.faq_skus[hit[0]] & set(focus or later):
                    faq_hits[i] = hit = None
                if hit is not None:
                    faq_pending.append((i, hit))
            continue
        if role != "agent" or bool(auto[i]):
            continue
        context = focus + [s for s in agent_recent if s not in focus] or later
        question = " ".join(norms[j] for j in q_block)
        implied = implied_claims(kb, norms[q_block[-1]], norm) if q_block else []
        results, mentioned = analyse_message(kb, text, norm, day, context, implied, cache=cache)
        if mentioned:
            agent_recent = mentioned
        for r in results:
            v = r.verdict
            if v.status == "contradicted":
                pts = POINTS_MAJOR if v.severity == "major" else POINTS_MINOR
                out.append(_record(msgs, a + i, r.rule_id, "-", v.severity, pts, r.claim.start, r.claim.end,
                                   v.explanation, 0.9))
            elif v.status == "confirmed":
                confirmed_at.add(i)
                out.append(_record(msgs, a + i, r.rule_id, "+", "info", POINTS_CONFIRMED, r.claim.start,
                                   r.claim.end, v.explanation, 0.9))
        if any(r.verdict.status == "contradicted" for r in results):
            contradicted_at.add(i)
        m = find_deflection(norm)
        if m and q_block and i not in confirmed_at:
            answers = topics_answerable(kb, question, context, day)
            hits = [faq_hits[j] for j in q_block if faq_hits.get(j) is not None]
            if hits:
                answers.append(("faq", kb.faq[hits[-1][0]].answer))  # type: ignore[index]
            if answers:
                asked = " / ".join(texts[j][:30] for j in q_block)
                out.append(_record(msgs, a + i, "KB-DEFLECT", "-", "major", POINTS_DEFLECT, m.start(), m.end(),
                                   f"买家问「{asked}」，客服推托「{text[m.start():m.end()]}」；知识库可答: "
                                   + "；".join(a for _, a in answers[:2]), 0.8))
                q_block = []
        if results:
            q_block = []  # answered; later deflections refer to later questions
    for qi, hit in faq_pending:
        out.extend(_faq_check(kb, msgs, a, b, qi, hit, confirmed_at | contradicted_at))
    return out


FAQ_MAX_REPLIES = 3
GREETING_RE = re.compile(r"[^0-9]{0,40}(?:您好|你好|在的|在呢|欢迎光临|很高兴为您服务|请问有什么|有什么可以帮)[^0-9]{0,30}")
Q_BLOCK = 3  # buyer messages kept as "the question" until an agent message answers something


def _faq_check(kb: KnowledgeBase, msgs: _Msgs, a: int, b: int, i: int, hit: tuple[int, float],
               checked_at: set[int]) -> list[dict]:
    """Do the agent replies to FAQ question ``i`` state the FAQ's key facts?

    Greetings are not answers. Missing all key facts is a finding only when the replies contain
    no checked claim: an FAQ answer often covers several products and a verified product-specific
    answer is fine; a contradicted one is already a finding.
    """
    entry = kb.faq[hit[0]]
    if not entry.key_facts:
        return []
    texts, norms, roles, auto = msgs.texts[a:b], msgs.norms[a:b], msgs.roles[a:b], msgs.auto[a:b]
    replies: list[int] = []
    for j in range(i + 1, len(roles)):
        role = roles[j]
        if role == "customer":
            break
        reply = norms[j].strip()
        if role == "agent" and not bool(auto[j]) and not GREETING_RE.fullmatch(reply) \
                and not reply.endswith(("?", "？")):  # a greeting or a question back is not an answer
            replies.append(j)
            if len(replies) >= FAQ_MAX_REPLIES:
                break
    if not replies:
        return []
    answer = " ".join(norms[j] for j in replies)
    if find_deflection(answer):
        return []  # KB-DEFLECT covers it
    covered = [f for f in entry.key_facts if fact_covered(f, answer)]
    missing = [f for f in entry.key_facts if f not in covered]
    text = texts[replies[0]]
    expl = (f"买家问题匹配 FAQ「{entry.question}」(相似度 {hit[1]:.2f})；关键信息 {'、'.join(entry.key_facts)}；"
            f"已答 {'、'.join(covered) or '无'}；缺少 {'、'.join(missing) or '无'}")
    if not covered:
        if any(j in checked_at for j in replies):
            return []
        return [_record(msgs, a + replies[0], "KB-FAQ", "-", "minor", POINTS_FAQ_MISS, 0, len(text), expl, 0.7)]
    return [_record(msgs, a + replies[0], "KB-FAQ", "+", "info", round(POINTS_FAQ_OK * len(covered) / len(entry.key_facts), 2),
                    0, len(text), expl, 0.7)]
