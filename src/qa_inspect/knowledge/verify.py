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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa

from qa_inspect import schema
from qa_inspect.columns import coded_strings
from qa_inspect.knowledge.base import MATERIAL_TERMS, NORM_MATERIAL_TERMS, KnowledgeBase
from qa_inspect.knowledge.claims import Claim, extract_claims
from qa_inspect.knowledge.faq import covered_facts
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


@dataclass(slots=True)
class Verdict:
    status: str  # confirmed | contradicted | unverifiable
    explanation: str = ""
    sku: str | None = None
    severity: str = "info"


@dataclass(slots=True)
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


@dataclass(slots=True)
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
    implied = list(implied)
    if cache is None:
        plan = _plan(kb, text, norm, implied, None)
    else:
        pkey = ("p", kb.shop_id, text, norm, _claims_key(implied))
        plan = cache.get(pkey)
        if plan is None:
            plan = cache[pkey] = _plan(kb, text, norm, implied, cache)
    ms, steps = plan
    results = []
    for c, before, after_skus, said, owners, jx in steps:
        if before is not None:
            cands = _candidates(before, context)
        elif context:
            cands = list(context)
        else:
            cands = list(after_skus) if after_skus is not None else []
        if owners and not owners & set(cands):
            continue  # "60支" naming another product ("升级成60支的"), not a spec claim
        if cache is None:
            verdict = judge(c, kb, cands, day, said)
        else:  # the verdict depends on the claim's kind, value and extras, not on where it is
            jkey = ("j", kb.shop_id, jx, tuple(cands), day, said)
            verdict = cache.get(jkey)
            if verdict is None:
                verdict = cache[jkey] = judge(c, kb, cands, day, said)
        results.append(ClaimResult(c, verdict, RULE_OF_KIND[c.kind]))
    mentioned = _candidates(ms[-1], context) if ms else []
    return results, mentioned


_Step = tuple[Claim, "Mention | None", "tuple[str, ...] | None", str, "set[str] | None", tuple]


def _plan(kb: KnowledgeBase, text: str, norm: str, implied: list[Claim],
          cache: dict | None, got: tuple | None = None) -> tuple[list[Mention], list[_Step]]:
    """The context-free part of ``analyse_message``: the message's product mentions (gifts are no
    switch) and, per claim, the last mention before it, the products of the first mention after
    it, the words said, the products a spec value names, and the claim's verdict key.
    ``got``: the text's (mentions, claims) when the caller has them."""
    if got is None:
        got = _text_facts(kb, norm, cache)
    ms, claims = got[0], list(got[1])
    gifts = [(c.start, c.end) for c in claims if c.kind == "gift"]
    ms = [m for m in ms if not any(a <= m.start and m.end <= b for a, b in gifts)]  # a gift is no switch
    taken = {c.kind for c in claims}
    claims += [c for c in implied if c.kind not in taken]
    steps: list[_Step] = []
    for c in claims:
        before = [m for m in ms if m.end <= c.start]
        after = [m for m in ms if m.start >= c.end]
        said = text[c.start:c.end]
        if c.extra.get("implied"):
            said = f"{said}（答「{c.extra['implied']}」）"
        owners = _cached_owners(kb, norm[c.start:c.end], cache) if c.kind == "spec" else None
        steps.append((c, before[-1] if before else None, after[0].skus if after else None, said, owners,
                      (c.kind, c.value, tuple(sorted(c.extra.items())))))
    return ms, steps


def _claims_key(claims: Iterable[Claim]) -> tuple:
    return tuple((c.kind, c.start, c.end, c.value, tuple(sorted(c.extra.items()))) for c in claims)


_NOTHING: tuple[tuple, tuple] = ((), ())  # no mention, no claim (shared: most texts)


def _text_facts(kb: KnowledgeBase, norm: str, cache: dict | None,
                keep: bool = True) -> tuple[list[Mention], list[Claim]]:
    """Product mentions and extracted claims of a normalised text (cached per text when ``cache``
    and ``keep``; empty results are shared empty tuples: fewer objects kept alive, less garbage
    collection)."""
    if cache is None:
        ms0 = mentions(kb, norm)
        return ms0, extract_claims(norm, [(m.start, m.end) for m in ms0], kb.find_materials)
    memo = cache.get(("c", kb.shop_id))
    if memo is None:
        memo = cache[("c", kb.shop_id)] = {}
    got = memo.get(norm)
    if got is None:
        ms0 = _cached_mentions(kb, norm, cache, keep)
        claims = extract_claims(norm, [(m.start, m.end) for m in ms0], kb.find_materials)
        got = (ms0, claims) if ms0 or claims else _NOTHING
        if keep:
            memo[norm] = got
    return got  # type: ignore[return-value]


def _cached_owners(kb: KnowledgeBase, fragment: str, cache: dict | None) -> set[str]:
    if cache is None:
        return kb.owners_of(fragment)
    key = ("o", kb.shop_id, fragment)
    got = cache.get(key)
    if got is None:
        got = cache[key] = kb.owners_of(fragment)
    return got


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
    skus: list[str | None]  # str or None (missing)
    auto: list
    # how often each normalised text occurs in the partition: what is computed for a text seen
    # once is not kept in the call's cache (with varied real text most are; nothing to reuse)
    repeats: Counter[str] = field(default_factory=Counter)


_FINDING_DTYPES = schema.empty_findings().dtypes.to_dict()  # constant: the findings contract's dtypes


class _Findings:
    """Findings collected column by column: one list per column, no object per finding (tens of
    thousands of small tuples or dicts per partition were a good part of this stage's time,
    garbage collection included). The message's own columns (conversation, shop, agent, seq)
    are looked up by row once, when the frame is built."""

    _COLS = (schema.RULE_ID, schema.POLARITY, schema.SEVERITY, schema.POINTS, schema.EVIDENCE,
             schema.EVIDENCE_START, schema.EVIDENCE_END, schema.EXPLANATION, schema.CONFIDENCE)
    _NUMERIC = {schema.POINTS: np.float64, schema.CONFIDENCE: np.float64, schema.EVIDENCE_START: np.int64,
                schema.EVIDENCE_END: np.int64, schema.MESSAGE_INDEX: np.int64}

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[list] = [[] for _ in self._COLS]
        self.msgs: _Msgs | None = None

    def add(self, m: _Msgs, i: int, rule_id: str, polarity: str, severity: str, points: float, start: int,
            end: int, explanation: str, confidence: float) -> None:
        self.msgs = m  # one _Msgs per call
        self.rows.append(i)
        c = self.cols
        c[0].append(rule_id)
        c[1].append(polarity)
        c[2].append(severity)
        c[3].append(points)
        c[4].append(m.texts[i][start:end] if start >= 0 else "")
        c[5].append(start)
        c[6].append(end)
        c[7].append(explanation)
        c[8].append(confidence)

    def frame(self) -> pd.DataFrame:
        """The contract frame (same columns and dtypes as ``schema.findings_frame``)."""
        n = len(self.rows)
        if not n or self.msgs is None:
            return schema.empty_findings()
        m, rows = self.msgs, self.rows
        data = dict(zip(self._COLS, self.cols, strict=True))
        data[schema.CONVERSATION_ID] = list(map(m.cids.__getitem__, rows))
        data[schema.SHOP_ID] = list(map(m.shops.__getitem__, rows))
        data[schema.AGENT_ID] = list(map(m.agents.__getitem__, rows))
        data[schema.MESSAGE_INDEX] = list(map(m.seqs.__getitem__, rows))
        data[schema.DIMENSION] = [DIMENSION] * n
        data[schema.SOURCE] = [SOURCE] * n
        return pd.DataFrame({c: self._column(c, data[c]) for c in schema.FINDING_COLUMNS}, copy=False)

    @classmethod
    def _column(cls, name: str, values: list) -> object:
        """One column as an array of the contract dtype, built the cheap way (numpy for numbers,
        pyarrow for Arrow strings: half the time of pandas' generic conversion)."""
        dtype = _FINDING_DTYPES[name]
        if name in cls._NUMERIC:
            return pd.array(np.asarray(values, dtype=cls._NUMERIC[name]), dtype=dtype)
        if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow" and dtype.na_value is pd.NA:
            return pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string()))
        return pd.array(values, dtype=dtype)


_NO_MENTIONS: list[Mention] = ()  # type: ignore[assignment]  # shared empty result (read only)


def _mention_memo(kb: KnowledgeBase, cache: dict) -> dict[str, list[Mention]]:
    """The call's normalised text -> product mentions table for one shop."""
    memo = cache.get(("m", kb.shop_id))
    if memo is None:
        memo = cache[("m", kb.shop_id)] = {}
    return memo


def _cached_mentions(kb: KnowledgeBase, norm: str, cache: dict, keep: bool = True) -> list[Mention]:
    memo = _mention_memo(kb, cache)
    ms = memo.get(norm)
    if ms is None:
        ms = mentions(kb, norm) or _NO_MENTIONS
        if keep:
            memo[norm] = ms
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
    texts = _texts(df[schema.TEXT])
    repeats: Counter[str] | None = None
    if schema.NORM_TEXT in df.columns:
        norms, repeats = _norms(df[schema.NORM_TEXT], df[schema.TEXT], texts)
    else:
        norms = [normalize_text(t) for t in texts]
    tokens = df[schema.TOKENS].tolist() if schema.TOKENS in df.columns else [None] * n
    roles = _objects(df[schema.ROLE])
    shops = _objects(df[schema.SHOP_ID])
    # FAQ matching for every buyer message of a shop in one batch (per-message sklearn calls are slow)
    buyer_rows = np.flatnonzero((df[schema.ROLE] == "customer").to_numpy(dtype=bool, na_value=False)).tolist()
    faq_hits = _faq_hits(kbs, buyer_rows, shops, norms, tokens, n)
    cid_col = df[schema.CONVERSATION_ID]
    cid_codes = None
    if isinstance(cid_col.dtype, pd.StringDtype) and not cid_col.hasnans:
        cids, cid_codes, _ = _coded(cid_col)
    else:
        cids = _objects(cid_col)
    msgs = _Msgs(
        texts=texts, norms=norms, roles=roles, cids=cids, shops=shops,
        agents=_agents(df[schema.AGENT_ID]),
        seqs=df[schema.SEQ].tolist() if df[schema.SEQ].dtype == np.int64 else [int(x) for x in df[schema.SEQ].tolist()],
        skus=_skus(df[schema.SKU]) if schema.SKU in df.columns else [None] * n,
        auto=df[schema.IS_AUTO_REPLY].tolist() if schema.IS_AUTO_REPLY in df.columns else [False] * n,
        repeats=Counter(norms) if repeats is None else repeats,
    )
    # conversation bounds, and each conversation's FAQ hits, in one pass each
    if cid_codes is not None:  # equal codes, equal ids
        cuts = [0, *(np.flatnonzero(cid_codes[1:] != cid_codes[:-1]) + 1).tolist(), n]
    else:
        cuts = [0, *[i for i in range(1, n) if cids[i] != cids[i - 1]], n]
    bounds = list(zip(cuts[:-1], cuts[1:], strict=True))  # (first row, end row) per conversation
    conv_kbs = [kbs.get(str(shops[a])) for a, _ in bounds]
    days = _conversation_days(df[schema.TS], bounds, [kb.timezone if kb is not None else None for kb in conv_kbs])
    # Per call, never shared between calls: results that depend only on their key (text-level
    # mentions/claims/deflections, verdicts, FAQ coverage). Chat logs repeat texts a lot.
    cache: dict = {}
    out = _Findings()
    for k, (a, b) in enumerate(bounds):
        kb = conv_kbs[k]
        if kb is None:
            continue
        _verify_conversation(msgs, a, b, days[k], faq_hits, kb, cache, out)
    return out.frame()


def _faq_hits(kbs: dict[str, KnowledgeBase], buyer_rows: list[int], shops: list, norms: list[str],
              tokens: list, n: int) -> list[tuple[int, float] | None]:
    """FAQ match of every non-empty buyer message (``buyer_rows``) of a shop with an FAQ:
    per partition row, (entry, similarity) or None.

    One batch per shop (per-message sklearn calls are slow), each distinct (text, tokens) once:
    the match of a text does not depend on the rest of the batch.
    """
    faq_kbs = {shop_id: kb for shop_id, kb in kbs.items() if kb.faq_index is not None}
    hits: list[tuple[int, float] | None] = [None] * n
    if not faq_kbs:
        return hits
    # shop -> (text -> slot of its first tokens), unique (text, tokens), row -> slot
    firsts: dict[str, dict[str, int]] = {s: {} for s in faq_kbs}
    uniq: dict[str, list[str]] = {s: [] for s in faq_kbs}  # texts, and their tokens in utoks
    utoks: dict[str, list[list | None]] = {s: [] for s in faq_kbs}
    extra: dict[tuple[str, str, tuple | None], int] = {}
    rows: list[int] = []  # parallel lists, not a tuple per row
    row_shops: list[str] = []
    row_slots: list[int] = []
    for i in buyer_rows:
        sh = shops[i]
        if sh not in faq_kbs:
            continue
        nm = norms[i]
        if not nm.strip():
            continue
        t = tokens[i] if isinstance(tokens[i], list) else None
        u, ut, f = uniq[sh], utoks[sh], firsts[sh]
        slot = f.get(nm)
        if slot is None:
            slot = f[nm] = len(u)
            u.append(nm)
            ut.append(t)
        elif ut[slot] != t:  # same text, other tokens (not from this pipeline): its own entry
            key = (sh, nm, tuple(t) if t is not None else None)
            slot = extra.get(key)  # type: ignore[assignment]
            if slot is None:
                slot = extra[key] = len(u)
                u.append(nm)
                ut.append(t)
        rows.append(i)
        row_shops.append(sh)
        row_slots.append(slot)
    results = {sh: kb.faq_index.match_many(uniq[sh], utoks[sh])  # type: ignore[union-attr]
               for sh, kb in faq_kbs.items() if uniq[sh]}
    for i, sh, slot in zip(rows, row_shops, row_slots, strict=True):
        hits[i] = results[sh][slot]
    return hits


def _coded(col: pd.Series) -> tuple[list[str], np.ndarray, list[str]]:
    """:func:`columns.coded_strings` of a column without missing values (no None entry)."""
    values, codes, uniques = coded_strings(col)
    return values, codes, uniques[:-1]  # type: ignore[return-value]


def _objects(col: pd.Series) -> list:
    """A column as a list of Python objects (no object-dtype copy of an Arrow string column)."""
    if isinstance(col.dtype, pd.StringDtype):
        return _coded(col)[0] if not col.hasnans else col.tolist()
    return col.astype("object").tolist()


def _skus(col: pd.Series) -> list[str | None]:
    """The export's sku of each row as str, None when missing."""
    if isinstance(col.dtype, pd.StringDtype):
        return _coded(col)[0] if not col.hasnans else [s if isinstance(s, str) else None for s in col.tolist()]
    return [None if s is None or pd.isna(s) else str(s) for s in col.astype("object").tolist()]


def _agents(col: pd.Series) -> list:
    """Agent ids with missing ones as None."""
    if isinstance(col.dtype, pd.StringDtype):
        return _coded(col)[0] if not col.hasnans else [a if isinstance(a, str) else None for a in col.tolist()]
    return [None if _na(a) else a for a in col.astype("object").tolist()]


def _texts(col: pd.Series) -> list[str]:
    """The text column as a list of str (missing -> "")."""
    if isinstance(col.dtype, pd.StringDtype):
        if not col.hasnans:
            return _coded(col)[0]
        return [t if isinstance(t, str) else "" for t in col.tolist()]
    return col.astype("object").where(col.notna(), "").astype(str).tolist()


def _norms(norm_col: pd.Series, text_col: pd.Series, texts: list[str]) -> tuple[list[str], Counter[str] | None]:
    """``norm_text`` where it is a string as long as the text (offsets must be valid in the
    text), else the text normalised here. Checked in one vectorised step when possible; then
    the occurrences of each text (``_Msgs.repeats``) come from the codes too (else None)."""
    if isinstance(norm_col.dtype, pd.StringDtype) and isinstance(text_col.dtype, pd.StringDtype) \
            and not norm_col.hasnans and not text_col.hasnans \
            and bool((norm_col.str.len().to_numpy() == text_col.str.len().to_numpy()).all()):
        values, codes, uniques = _coded(norm_col)
        return values, Counter(dict(zip(uniques, np.bincount(codes, minlength=len(uniques)).tolist(), strict=True)))
    raw = norm_col.astype("object").tolist()
    return [n if isinstance(n, str) and len(n) == len(t) else normalize_text(t) for n, t in zip(raw, texts,
                                                                                                strict=True)], None


def _conversation_days(ts: pd.Series, bounds: list[tuple[int, int]],
                       tzs: list[str | None]) -> list[dt.date | None]:
    """Shop-local start day of each conversation (rows ``bounds[k]`` of ``ts``; its first timestamp).

    Only the first timestamp of each conversation is converted, one vectorised call per time
    zone (turning all timestamps into Python objects was a tenth of this stage). ``tzs[k]``
    None: not needed (no KB for that shop).
    """
    days: list[dt.date | None] = [None] * len(bounds)
    valid = np.flatnonzero(ts.notna().to_numpy())
    if not len(valid) or not bounds:
        return days
    starts = np.fromiter((a for a, _ in bounds), dtype=np.int64, count=len(bounds))
    ends = np.fromiter((b for _, b in bounds), dtype=np.int64, count=len(bounds))
    k = np.searchsorted(valid, starts)
    first = valid[np.minimum(k, len(valid) - 1)]
    has = (k < len(valid)) & (first < ends)
    by_tz: dict[str, list[int]] = {}
    for c in np.flatnonzero(has).tolist():
        tz = tzs[c]
        if tz is not None:
            by_tz.setdefault(tz, []).append(c)
    vectorised = isinstance(ts.dtype, pd.DatetimeTZDtype) or ts.dtype.kind == "M"
    for tz, convs in by_tz.items():
        sel = ts.iloc[first[convs]]
        if vectorised:
            aware = isinstance(ts.dtype, pd.DatetimeTZDtype)
            local = pd.DatetimeIndex(sel).tz_convert(ZoneInfo(tz)) if aware else pd.DatetimeIndex(sel)
            got = local.date.tolist()
        else:
            got = [_local_day(t, tz) for t in sel.tolist()]
        for c, d in zip(convs, got, strict=True):
            days[c] = d
    return days


def _verify_conversation(msgs: _Msgs, a: int, b: int, day: dt.date | None,
                         hits: list[tuple[int, float] | None], kb: KnowledgeBase,
                         cache: dict, out: _Findings) -> None:
    """Walk one conversation (rows ``a:b`` of ``msgs``) in order, tracking the products under discussion.

    The buyer's focus (products the buyer names, or the export's sku) and the products the agent
    named last are both candidates; an agent recommending another product does not make the
    buyer's next question about it. Rows are partition rows (``hits[i]`` is row i's FAQ match).
    Findings go to ``out``.

    Same decisions as ``analyse_message`` per agent message, without its per-call objects: the
    message plan (mentions, claims, candidate rules) is kept per distinct text and each claim's
    verdicts per candidate set (tests/knowledge/test_kb_speed_paths.py compares with a plain
    reference walk).
    """
    texts, norms, roles, skus, auto, repeats = msgs.texts, msgs.norms, msgs.roles, msgs.skus, msgs.auto, msgs.repeats
    memo = _mention_memo(kb, cache)
    agent_memo = _agent_memo(kb, cache)
    products = kb.products
    faq_skus = kb.faq_skus
    focus: list[str] = []
    agent_recent: list[str] = []
    last_sku_field: str | None = None
    q_block: list[int] = []  # buyer messages since the last agent message that answered something
    # No product named yet (Qianniu exports have no sku)? Chats are mostly about one product, so
    # fall back to the first product the buyer (else the agent) names later in the conversation
    # (computed only when needed: most chats have a focus from the sku field).
    later: list[str] | None = None
    confirmed_at: set[int] = set()
    contradicted_at: set[int] = set()
    faq_pending: list[tuple[int, tuple[int, float]]] = []
    for i in range(a, b):
        sku = skus[i]
        if sku is not None and sku != last_sku_field and sku in products:
            focus, last_sku_field = [sku], sku
        role = roles[i]
        if role == "customer":
            norm = norms[i]
            ms = memo.get(norm)
            if ms is None:
                ms = mentions(kb, norm) or _NO_MENTIONS
                if repeats[norm] > 1:
                    memo[norm] = ms
            if ms:
                focus = _candidates(ms[-1], focus + agent_recent)
                agent_recent = []
            if norm.strip():
                q_block.append(i)
                if len(q_block) > Q_BLOCK:
                    del q_block[0]
                hit = hits[i]
                # an FAQ about a named product ("磁吸充电宝什么时候有货") only for that product
                if hit is not None and faq_skus[hit[0]]:
                    if not focus and later is None:
                        later = _later(kb, roles[a:b], norms[a:b], memo, cache)
                    if not faq_skus[hit[0]] & set(focus or later):  # type: ignore[arg-type]
                        hits[i] = hit = None
                if hit is not None:
                    faq_pending.append((i, hit))
            continue
        if role != "agent" or bool(auto[i]):
            continue
        norm = norms[i]
        facts = agent_memo.get(norm)
        if facts is None:
            keep = repeats[norm] > 1
            facts = _AgentText.of(kb, norm, cache, keep)
            if keep:
                agent_memo[norm] = facts
        if facts.inert:
            continue  # names nothing, claims nothing, dodges nothing, answers no yes/no question
        text = texts[i]
        if agent_recent:  # never empty then, so ``later`` is not needed
            context = focus + [s for s in agent_recent if s not in focus]
        else:
            if not focus and later is None:
                later = _later(kb, roles[a:b], norms[a:b], memo, cache)
            context = focus or later  # type: ignore[assignment]
        implied: list[Claim] = []
        if q_block and facts.yes_no:
            question = norms[q_block[-1]]
            ikey = ("i", kb.shop_id, question, norm)
            implied = cache.get(ikey)  # type: ignore[assignment]
            if implied is None:
                implied = cache[ikey] = implied_claims(kb, question, norm)
        answered = False  # any claim checked (whatever the verdict): the question is answered
        if facts.claims or implied:
            if implied:
                pkey = ("P", kb.shop_id, text, norm, _claims_key(implied))
                plan = cache.get(pkey)
                if plan is None:
                    plan = cache[pkey] = _fast_plan(kb, text, norm, implied, cache, facts, True)
            else:
                plan = facts.plans.get(text)
                if plan is None:
                    plan = facts.plans[text] = _fast_plan(kb, text, norm, implied, cache, facts, repeats[norm] > 1)
            last_mention, steps = plan
            for c, before, after_skus, owners, rule_id, verdicts, said in steps:
                if before is not None:
                    cands = _candidates(before, context)
                elif context:
                    cands = context
                else:
                    cands = list(after_skus) if after_skus is not None else []
                if owners and not owners & set(cands):
                    continue  # "60支" naming another product ("升级成60支的"), not a spec claim
                vkey = (tuple(cands), day)
                v = verdicts.get(vkey)
                if v is None:
                    v = verdicts[vkey] = judge(c, kb, list(cands), day, said)
                answered = True
                if v.status == "contradicted":
                    contradicted_at.add(i)
                    out.add(msgs, i, rule_id, "-", v.severity, POINTS_MAJOR if v.severity == "major" else POINTS_MINOR,
                            c.start, c.end, v.explanation, 0.9)
                elif v.status == "confirmed":
                    confirmed_at.add(i)
                    out.add(msgs, i, rule_id, "+", "info", POINTS_CONFIRMED, c.start, c.end, v.explanation, 0.9)
            mentioned = _candidates(last_mention, context) if last_mention is not None else []
        else:
            mentioned = _candidates(facts.mentions[-1], context) if facts.mentions else []
        if mentioned:
            agent_recent = mentioned
        m = facts.deflection
        if m and q_block and i not in confirmed_at:
            question = " ".join(norms[j] for j in q_block)
            answers = topics_answerable(kb, question, context, day)
            faq = [hits[j] for j in q_block if hits[j] is not None]
            if faq:
                answers.append(("faq", kb.faq[faq[-1][0]].answer))  # type: ignore[index]
            if answers:
                asked = " / ".join(texts[j][:30] for j in q_block)
                out.add(msgs, i, "KB-DEFLECT", "-", "major", POINTS_DEFLECT, m.start(), m.end(),
                        f"买家问「{asked}」，客服推托「{text[m.start():m.end()]}」；知识库可答: "
                        + "；".join(a for _, a in answers[:2]), 0.8)
                q_block = []
        if answered:
            q_block = []  # answered; later deflections refer to later questions
    for qi, hit in faq_pending:
        _faq_check(kb, msgs, b, qi, hit, confirmed_at | contradicted_at, cache, out)


_FastStep = tuple[Claim, "Mention | None", "tuple[str, ...] | None", "set[str] | None", str, dict, str]


def _fast_plan(kb: KnowledgeBase, text: str, norm: str, implied: list[Claim],
               cache: dict, facts: _AgentText, keep: bool) -> tuple[Mention | None, list[_FastStep]]:
    """``_plan`` for the conversation walk: the message's last product mention and, per claim,
    what ``analyse_message`` needs plus its rule id and the call's verdict table for the claim
    (kind, value, extras and words said: the verdict depends on nothing else but the candidates
    and the day)."""
    ms, steps = _plan(kb, text, norm, implied, cache, (facts.mentions, facts.claims))
    fast: list[_FastStep] = []
    for c, before, after_skus, said, owners, jx in steps:
        vkey = ("j", kb.shop_id, jx, said)
        verdicts = cache.get(vkey)
        if verdicts is None:
            verdicts = {}
            if keep:  # a claim of a text seen once may still be shared ("299元"), but rarely
                cache[vkey] = verdicts
        fast.append((c, before, after_skus, owners, RULE_OF_KIND[c.kind], verdicts, said))
    return (ms[-1] if ms else None), fast


def _later(kb: KnowledgeBase, roles: list, norms: list[str], memo: dict[str, list[Mention]],
           cache: dict) -> list[str]:
    """The first product the buyer names in the conversation, else the first one the agent names
    outside an upsell (the fallback product of a chat without sku)."""
    for want in ("customer", "agent"):
        for role, nm in zip(roles, norms, strict=True):
            if role == want:
                ms = memo.get(nm)
                if ms is None:
                    ms = memo[nm] = mentions(kb, nm) or _NO_MENTIONS
                if ms and not (want == "agent" and _cached_upsell(nm, cache)):
                    return list(ms[0].skus)
    return []


@dataclass(slots=True)
class _AgentText:
    """What an agent message's text alone says (per shop; computed once per distinct text per call)."""

    mentions: list[Mention]
    claims: list[Claim]
    deflection: re.Match[str] | None
    yes_no: bool  # starts like a yes/no answer (有的/没有了/是的): may imply a claim (implied_claims)
    inert: bool  # nothing of the above: the message changes no state and makes no finding
    plans: dict = field(default_factory=dict)  # original text -> _fast_plan (no implied claims)

    @classmethod
    def of(cls, kb: KnowledgeBase, norm: str, cache: dict, keep: bool = True) -> _AgentText:
        ms, claims = _text_facts(kb, norm, cache, keep)
        m = find_deflection(norm)
        yes_no = bool(YES_RE.search(norm) or HAS_RE.search(norm) or NONE_RE.search(norm))
        if not ms and not claims and m is None and not yes_no:
            return _INERT
        return cls(ms, claims, m, yes_no, False)


_INERT = _AgentText([], [], None, False, True)  # shared by every inert text (never changed)


def _agent_memo(kb: KnowledgeBase, cache: dict) -> dict[str, _AgentText]:
    memo = cache.get(("t", kb.shop_id))
    if memo is None:
        memo = cache[("t", kb.shop_id)] = {}
    return memo


def _analysis(kb: KnowledgeBase, text: str, norm: str, day: dt.date | None, context: list[str],
              implied: list[Claim], cache: dict) -> tuple[list[ClaimResult], list[str], bool]:
    """``analyse_message`` and whether any of its claims is contradicted. (Not cached as a whole:
    its parts are, and a per-context cache kept tens of thousands of objects alive, which cost
    more in garbage collection than it saved.)"""
    results, mentioned = analyse_message(kb, text, norm, day, context, implied, cache=cache)
    return results, mentioned, any(r.verdict.status == "contradicted" for r in results)


def _cached_upsell(norm: str, cache: dict) -> bool:
    key = ("u", norm)
    got = cache.get(key)
    if got is None:
        got = cache[key] = UPSELL_RE.search(norm) is not None
    return got


FAQ_MAX_REPLIES = 3
GREETING_RE = re.compile(r"[^0-9]{0,40}(?:您好|你好|在的|在呢|欢迎光临|很高兴为您服务|请问有什么|有什么可以帮)[^0-9]{0,30}")
Q_BLOCK = 3  # buyer messages kept as "the question" until an agent message answers something


def _faq_check(kb: KnowledgeBase, msgs: _Msgs, b: int, i: int, hit: tuple[int, float],
               checked_at: set[int], cache: dict, out: _Findings) -> None:
    """Do the agent replies to FAQ question ``i`` state the FAQ's key facts?

    Greetings are not answers. Missing all key facts is a finding only when the replies contain
    no checked claim: an FAQ answer often covers several products and a verified product-specific
    answer is fine; a contradicted one is already a finding.
    """
    entry = kb.faq[hit[0]]
    if not entry.key_facts:
        return
    norms, roles, auto = msgs.norms, msgs.roles, msgs.auto  # partition rows; the conversation ends at b
    can_answer = cache.get("r")
    if can_answer is None:
        can_answer = cache["r"] = {}
    replies: list[int] = []
    for j in range(i + 1, b):
        role = roles[j]
        if role == "customer":
            break
        if role == "agent" and not bool(auto[j]):
            nm = norms[j]
            ok = can_answer.get(nm)
            if ok is None:
                ok = can_answer[nm] = _can_answer(nm)
            if not ok:
                continue
            replies.append(j)
            if len(replies) >= FAQ_MAX_REPLIES:
                break
    if not replies:
        return
    answer = " ".join(norms[j] for j in replies)
    repeats = msgs.repeats
    keep = all(repeats[norms[j]] > 1 for j in replies)  # else this answer cannot come again
    key = ("f", kb.shop_id, hit[0], answer)
    got = cache.get(key)
    if got is None:
        if find_deflection(answer):
            got = (None, [], [])  # KB-DEFLECT covers it
        else:
            covered = covered_facts(entry.key_facts, answer, cache.setdefault("facts", {}))
            got = (bool(covered), covered, [f for f in entry.key_facts if f not in covered])
        if keep:
            cache[key] = got
    any_covered, covered, missing = got
    if any_covered is None:
        return
    sim = f"{hit[1]:.2f}"
    ekey = ("e", key, sim)
    expl = cache.get(ekey)
    if expl is None:
        expl = (f"买家问题匹配 FAQ「{entry.question}」(相似度 {sim})；关键信息 {'、'.join(entry.key_facts)}；"
                f"已答 {'、'.join(covered) or '无'}；缺少 {'、'.join(missing) or '无'}")
        if keep:
            cache[ekey] = expl
    first = replies[0]
    if not any_covered:
        if any(j in checked_at for j in replies):
            return
        out.add(msgs, first, "KB-FAQ", "-", "minor", POINTS_FAQ_MISS, 0, len(msgs.texts[first]), expl, 0.7)
        return
    out.add(msgs, first, "KB-FAQ", "+", "info", round(POINTS_FAQ_OK * len(covered) / len(entry.key_facts), 2),
            0, len(msgs.texts[first]), expl, 0.7)


def _can_answer(norm: str) -> bool:
    """Could this agent message answer a question (not a greeting, not a question back)?"""
    reply = norm.strip()
    return not GREETING_RE.fullmatch(reply) and not reply.endswith(("?", "？"))
