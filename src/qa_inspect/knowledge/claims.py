"""Checkable claims in an agent message: what was said, where (offsets), which value.

Extraction is product-independent and works on the normalised text (Simplified, half-width,
lower-case; same length as the original, so offsets are valid in ``text``). Patterns run in
priority order and each claim masks its span, so "满300减30" is a promotion and its 30 is not
also read as a product price. Which product a claim is about is decided later (verify.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qa_inspect.knowledge.numbers import CN_NUM_CHARS, NUMBER_RE, duration_value, parse_number

NUM = NUMBER_RE
CUR = r"(?:nt\$|\$|¥|rmb)"
UNIT = r"(?:块钱|元|块|圆|rmb)"
_CLAUSE_BREAK = re.compile(r"[,，。!！?？;；~～\n、]")


@dataclass(slots=True)
class Claim:
    kind: str  # price | promo | coupon | discount | free_shipping | shipping_fee | freight_insurance
    #           | dispatch | return | warranty | stock | gift | material | material_pct | spec
    start: int
    end: int
    value: object = None
    extra: dict = field(default_factory=dict)


def _rx(p: str) -> re.Pattern[str]:
    return re.compile(p)


# --- promotions / shipping -------------------------------------------------------------
PROMO_RE = _rx(rf"满\s*{CUR}?\s*(?P<t>{NUM})\s*{UNIT}?\s*(?:就|再|立|可)?\s*(?:减|折|省|优惠)\s*{CUR}?\s*(?P<a>{NUM})\s*{UNIT}?")
FREE_SHIP_RE = _rx(rf"满\s*{CUR}?\s*(?P<t>{NUM})\s*{UNIT}?\s*(?:就|即|才|可以|可|都|能)?\s*(?:包邮|免运费?|免邮)"
                   rf"|(?<![满\d])(?P<t2>\d+)\s*{UNIT}?\s*(?:包邮|免运)")
FREE_ALL_RE = _rx(r"(?:全场|全店|全馆|都|全部|无门槛|统统|一律)\s*(?:是|都)?\s*(?:包邮|免运费?|免邮)")
SHIP_FEE_RE = _rx(rf"(?:运费|邮费|快递费)\s*(?:是|为|要|收|只要|就|一般|统一)?\s*{CUR}?\s*(?P<n>{NUM})\s*{UNIT}?")
INSURANCE_NEG_RE = _rx(r"(?:没有|没|不送|不赠送?|无|不含|不带|不提供)\s*(?:送|赠送?)?\s*运费险")
INSURANCE_POS_RE = _rx(r"(?:送|赠送?|有|带|含|包含|提供|附)\s*(?:您|你)?\s*运费险")
COUPON_RE = _rx(rf"{CUR}?\s*(?P<a>{NUM})\s*{UNIT}?\s*(?:的)?\s*(?:优惠券|店铺券|无门槛券|券)(?!后)")
DISCOUNT_RE = _rx(r"(?<![\d.$])(?P<r>\d{1,2}(?:\.\d)?|[一二三四五六七八九]{1,2}(?:点[一二三四五六七八九])?)\s*折(?!\s*(?:nt|\$|¥|\d))")

# --- durations ---------------------------------------------------------------------------
DUR_H = rf"(?P<num>{NUM}|半)(?P<half>个半|半)?\s*(?P<unit>个小时|小时|钟头|个工作日|工作日|天|日|h(?![a-z]))"
DUR_M = rf"(?P<num>{NUM}|半)(?P<half>个半|半)?\s*(?P<unit>个月|年|月)"
DISPATCH_RES = [
    _rx(rf"{DUR_H}\s*(?:内|之内|以内|左右)?\s*(?:就|会|都|可以|能|给您|给你|为您|帮您|安排|即可|必|一定)*\s*"
        r"(?:发货|发出|出货|寄出|发走|发(?![票现明生]))"),
    _rx(rf"(?:发货|出货)\s*(?:时间|时效)?\s*(?:是|为|在|大概|一般|都|会在|要|的话)*\s*(?:付款后|拍下后|下单后)?\s*{DUR_H}"),
]
DISPATCH_SAME_DAY_RE = _rx(r"(?:当天|今天|当日)\s*(?:就|都|会|可以|能)?\s*(?:发货|发出|出货|发)")
RETURN_RES = [
    _rx(rf"(?P<num>{NUM})\s*天\s*(?:的)?\s*(?:无理由|鉴赏期|内?\s*(?:都)?\s*(?:可以|可|能|支持)?\s*(?:退换|退货|包退|无理由|退))"),
    _rx(rf"(?:鉴赏期|无理由退换货?|无理由退货|无理由|退换货?期|退货期)\s*(?:是|为|有|都是)?\s*(?P<num>{NUM})\s*天"),
]
WARRANTY_RES = [
    _rx(rf"(?:保修|保固|质保|包换|保换)\s*(?:期)?\s*(?:是|为|有|都是|都有|时间是?|期限是?)?\s*{DUR_M}"),
    _rx(rf"{DUR_M}\s*(?:的)?\s*(?:免费)?\s*(?:保修|保固|质保|包换|保换)"),
]

# --- price ------------------------------------------------------------------------------
PRICE_RES = [
    _rx(rf"(?P<cur>{CUR})\s*(?P<num>{NUM})"),
    _rx(rf"(?P<num>{NUM})\s*(?P<unit>{UNIT})"),
    _rx(rf"(?P<num>{NUM})\s*(?:就能|就可以|即可|就)?\s*(?:带回家|拿下|到手|入手|带走)"),
    _rx(r"(?:价格|价钱|售价|活动价|特价|优惠价|秒杀价|到手价?|券后价?|折后价?|原价|现价|只要|仅需|才|卖|"
        r"现在|目前|活动期间)\s*(?:是|为|只要|:)?\s*"
        rf"(?P<num>\d+(?:\.\d+)?|[{CN_NUM_CHARS}]{{2,}})"
        r"(?!\s*(?:%|折|天|小时|个|件|ml|g|w|mah|支|片|cm|斤|年|月|号|点|日|周|次|分|秒|倍|\.|\d))"),
]
PRICE_CUE_END = re.compile(r"(?:价|价格|价钱|到手|券后|折后|只要|仅需|才|现在|售价|卖|原价|现价)\s*(?:是|为|:)?\s*$")
PRICE_EXCLUDE_PREFIX = re.compile(r"运费|邮费|快递费|满|减|优惠|省|加|差|补|返|便宜|少|红包|定金|押金|退|赔|多|券|折|贵|涨|凑")
PRICE_EXCLUDE_SUFFIX = re.compile(r"^\s*(?:的)?\s*(?:券|优惠|红包|包邮|免运|以上|差价|运费|减|定金|无门槛|起|的差|现金)")
BUNDLE_RE = re.compile(r"一共|总共|合计|共计|加起来|搭配|一起买|两件|两套|两个|2件|套装价|组合价|[两二三四五2-5]\s*件(?!套)")
MULTI_QTY = re.compile(r"(?:[两二三四五六七八九十2-9]|\d{2,})\s*(?:件|个|套|只|盒|瓶|对|条|支)")

# --- stock / gift -----------------------------------------------------------------------
STOCK_NEG_RE = _rx(r"没有?货|缺货|断货|无货|卖完|卖光|售罄|没有库存|没库存|库存不足|暂时没有|暂无库存|没有现货|没现货|没有了")
STOCK_PAST_RE = re.compile(r"补货|几次|好几次|每次|经常|很快就|一上架")
STOCK_POS_RE = _rx(r"(?:有货|有现货|是现货|现货(?!商品)|有库存|库存充足|库存还有|库存很多)(?!\s*(?:吗|么|嘛|\?|没))")
GIFT_RE = _rx(r"(?<![配递运发])(?:赠送|附赠|加送|还送|再送|免费送|送|赠)\s*(?:您|你|给您|给你)?\s*"
              r"(?:一个|一只|一份|一条|一套|一支|一包|一瓶|一盒|一对|一根|一张|个|1个|1份|1根|两个|2个)?\s*"
              r"(?P<g>[\u4e00-\u9fffa-z0-9][\u4e00-\u9fffa-z0-9 .]{1,15})")
GIFT_STOP = re.compile(r"(?:哦|哈|呢|啊|呀|吧|喔|哟|哒|噢|给|的|一个|一份|一只|一条|一套|两个|哈)")
GIFT_BAD_START = ("到", "货", "达", "出", "过去", "您", "你", "的", "给", "人", "礼", "运费险", "上门", "小样吗")

# --- material / spec --------------------------------------------------------------------
MATERIAL_CUE = re.compile(r"是|材质|面料|用的|采用|填充|外壳|做的|料子|成分|纯|全|含|100%|%")
MATERIAL_NEG = re.compile(r"不是|并非|不含|没有|不用|非|无|比|不像|不同于|跟|和|还是|或|搭配|配合|加上")
PCT_RE = _rx(r"(?P<p>\d+(?:\.\d+)?)\s*%\s*(?:的)?\s*(?P<t>[\u4e00-\u9fffa-z]{1,8})"
             r"|(?P<t2>[\u4e00-\u9fffa-z]{1,8}?)\s*(?:含量|浓度|比例|占比)\s*(?:是|为|有)?\s*(?P<p2>\d+(?:\.\d+)?)\s*%")
SPEC_RE = _rx(r"(?<![\d.])(?P<n>\d+(?:\.\d+)?)\s*(?P<u>mah|wh|w|ml|db|g|斤|片|支)(?![a-z])"
              r"|(?P<u2>ipx|spf)\s*(?P<n2>\d+)")
BATTERY_RE = _rx(rf"(?:续航|播放|听歌|连续使用|能用|可以用|用)\s*(?:时间)?\s*(?:是|为|有|能|可以|大概|达到|约|可达)*\s*"
                 rf"(?:单次)?\s*(?P<num>{NUM})\s*(?:个)?\s*小时")


# Every claim pattern above needs a number (Arabic, Chinese numerals, 半) or one of these words;
# a message with none of them (and no material term) has no claim, so the ~30 patterns are
# skipped. Keep in sync when adding a pattern (tests/knowledge compares with the full scan).
CLAIM_CUE_RE = re.compile(rf"[\d{CN_NUM_CHARS}半]|包邮|免运|免邮|运费险|当天|今天|当日|货|卖完|卖光|售罄|库存|暂时没有"
                          r"|没有了|送|赠")


_DIGIT = re.compile(r"\d")


class _Mask:
    def __init__(self, n: int) -> None:
        self.used = [False] * n

    def free(self, s: int, e: int) -> bool:
        return not any(self.used[s:e])

    def take(self, s: int, e: int) -> None:
        for i in range(s, e):
            self.used[i] = True


def clause_prefix(norm: str, s: int, width: int = 6) -> str:
    """Up to ``width`` chars before ``s`` within the same clause."""
    pre = norm[max(0, s - width):s]
    parts = _CLAUSE_BREAK.split(pre)
    return parts[-1]


def clause_of(norm: str, s: int, e: int) -> str:
    a = max((m.end() for m in _CLAUSE_BREAK.finditer(norm, 0, s)), default=0)
    m = _CLAUSE_BREAK.search(norm, e)
    return norm[a:m.start() if m else len(norm)]


def _dur(m: re.Match[str]) -> tuple[str, float] | None:
    return duration_value(m.group("num"), m.group("unit"), m.group("half"))


def extract_claims(norm: str, blocked: list[tuple[int, int]] = (),  # type: ignore[assignment]
                   find_materials=None, *, prefilter: bool = True) -> list[Claim]:  # noqa: ANN001
    """All claims in a normalised agent message, in text order.

    ``blocked``: spans of product mentions (a name like "60支四件套" is not a spec claim).
    ``find_materials``: the KB's material-term finder (norm -> [(start, end, term)]).
    ``prefilter``: skip texts without any claim cue, and pattern groups whose literal words are
    absent (same result, much faster); False scans everything (the reference the tests use).
    """
    if prefilter and not CLAIM_CUE_RE.search(norm) and (find_materials is None or not find_materials(norm)):
        return []
    mask = _Mask(len(norm))
    for s, e in blocked:
        mask.take(s, e)
    out: list[Claim] = []

    # context checks read the text with product names blanked ("四件套" is not "四件")
    ctx_norm = norm
    if blocked:
        ctx = list(norm)
        for a, b in blocked:
            ctx[a:b] = ["□"] * (b - a)
        ctx_norm = "".join(ctx)

    def add(kind: str, m_s: int, m_e: int, value: object, check: tuple[int, int] | None = None,
            **extra: object) -> None:
        cs, ce = check or (m_s, m_e)
        if mask.free(cs, ce):
            out.append(Claim(kind, m_s, m_e, value, dict(extra)))
            mask.take(m_s, m_e)

    # Each group of patterns below needs one of its literal words (and the duration / spec
    # patterns one of their units); testing those with ``in`` first skips most regex scans
    # (tests/knowledge/test_kb_speed_paths.py compares with the full scan, prefilter=False).
    if prefilter:
        g_promo, g_fee, g_insurance, g_coupon, g_discount = "满" in norm, "费" in norm, "运费险" in norm, \
            "券" in norm, "折" in norm
        free_ship = "包邮" in norm or "免运" in norm or "免邮" in norm
        dispatch = "发" in norm or "出货" in norm or "寄出" in norm
        g_return = "退" in norm or "无理由" in norm or "鉴赏期" in norm
        g_warranty, g_hours, g_pct = "保" in norm or "包换" in norm, "小时" in norm, "%" in norm
        g_stock_pos = "货" in norm or "库存" in norm
        g_stock_neg = g_stock_pos or "卖完" in norm or "卖光" in norm or "售罄" in norm or "暂时没有" in norm \
            or "没有了" in norm
        g_gift = "送" in norm or "赠" in norm
        # units the duration patterns need: DUR_H (dispatch), 天 (return), DUR_M (warranty)
        day = "天" in norm
        hours_unit = day or "小时" in norm or "日" in norm or "钟头" in norm or "h" in norm
        g_return = g_return and day
        g_warranty = g_warranty and ("月" in norm or "年" in norm)
        g_spec = _DIGIT.search(norm) is not None and (
            "w" in norm or "g" in norm or "ml" in norm or "mah" in norm or "db" in norm or "片" in norm
            or "支" in norm or "斤" in norm or "ipx" in norm or "spf" in norm)
    else:
        g_promo = g_fee = g_insurance = g_coupon = g_discount = free_ship = dispatch = g_return = True
        g_warranty = g_hours = g_pct = g_stock_pos = g_stock_neg = g_gift = hours_unit = g_spec = True

    for m in PROMO_RE.finditer(norm) if g_promo else ():
        t, a = parse_number(m.group("t")), parse_number(m.group("a"))
        if t is not None and a is not None and a < t:
            add("promo", m.start(), m.end(), a, threshold=t)
    for m in FREE_SHIP_RE.finditer(norm) if free_ship else ():
        t = parse_number(m.group("t") or m.group("t2"))
        if m.group("t2") and PRICE_CUE_END.search(clause_prefix(norm, m.start(), 6)):
            continue  # "活动价299元包邮": a price with free shipping, not a threshold
        if t is not None:
            add("free_shipping", m.start(), m.end(), t)
    for m in FREE_ALL_RE.finditer(norm) if free_ship else ():
        add("free_shipping", m.start(), m.end(), 0.0)
    for m in SHIP_FEE_RE.finditer(norm) if g_fee else ():
        n = parse_number(m.group("n"))
        if n is not None and not clause_prefix(norm, m.start(), 3).endswith(("免", "不要", "没有", "无")):
            add("shipping_fee", m.start(), m.end(), n)
    for m in INSURANCE_NEG_RE.finditer(norm) if g_insurance else ():
        add("freight_insurance", m.start(), m.end(), False)
    for m in INSURANCE_POS_RE.finditer(norm) if g_insurance else ():
        add("freight_insurance", m.start(), m.end(), True)
    for m in COUPON_RE.finditer(norm) if g_coupon else ():
        a = parse_number(m.group("a"))
        if a is not None and norm[max(0, m.start() - 1):m.start()] not in ("满", "减"):
            add("coupon", m.start(), m.end(), a)
    for m in DISCOUNT_RE.finditer(norm) if g_discount else ():
        r = m.group("r").replace("点", ".")
        v = parse_number(r) if "." not in r or r[0].isdigit() else None
        if "." in r and not r[0].isdigit():
            a, b = r.split(".")
            va, vb = parse_number(a), parse_number(b)
            v = (va + vb / 10) if va is not None and vb is not None else None
        if v is None or v <= 0:
            continue
        rate = v / 10 if v < 10 else v / 100
        add("discount", m.start(), m.end(), rate)
    for rx in DISPATCH_RES if dispatch and hours_unit else ():
        for m in rx.finditer(norm):
            d = _dur(m)
            if d and d[0] == "hours":
                add("dispatch", m.start(), m.end(), d[1])
    for m in DISPATCH_SAME_DAY_RE.finditer(norm) if dispatch else ():
        add("dispatch", m.start(), m.end(), 24.0, same_day=True)
    for rx in RETURN_RES if g_return else ():
        for m in rx.finditer(norm):
            n = parse_number(m.group("num"))
            if n is not None:
                add("return", m.start(), m.end(), n)
    for rx in WARRANTY_RES if g_warranty else ():
        for m in rx.finditer(norm):
            d = _dur(m)
            if d and d[0] == "months":
                add("warranty", m.start(), m.end(), d[1])
    for m in BATTERY_RE.finditer(norm) if g_hours else ():
        n = parse_number(m.group("num"))
        if n is not None:
            add("spec", m.start(), m.end(), n, unit="续航小时")
    _prices(norm, ctx_norm, mask, add, gated=prefilter)
    for m in STOCK_NEG_RE.finditer(norm) if g_stock_neg else ():
        if STOCK_PAST_RE.search(clause_prefix(norm, m.start(), 12)):
            continue  # "补货几次都卖光了": popularity, not a statement that it is out of stock now
        add("stock", m.start(), m.end(), False)
    for m in STOCK_POS_RE.finditer(norm) if g_stock_pos else ():
        pre = clause_prefix(norm, m.start(), 2)
        if not pre.endswith(("没", "不", "无")):
            add("stock", m.start(), m.end(), True)
    for m in GIFT_RE.finditer(norm) if g_gift else ():
        g = m.group("g")
        stop = GIFT_STOP.search(g)
        if stop:
            g = g[:stop.start()]
        g = g.rstrip(" .")
        if len(g) < 2 or g.startswith(GIFT_BAD_START):
            continue
        end = m.start("g") + len(g)
        add("gift", m.start(), end, g, check=(m.start(), m.start("g")))  # a gift may be a catalog item
    if find_materials is not None:
        for s, e, term in find_materials(norm):
            if not mask.free(s, e):
                continue
            clause = clause_of(norm, s, e)
            cs = norm.find(clause) if clause else s
            before = norm[cs:s]
            if MATERIAL_NEG.search(before[-4:]) or "吗" in clause or "?" in clause:
                continue
            if not (MATERIAL_CUE.search(clause) or norm[e:e + 1] == "的"):
                continue
            out.append(Claim("material", s, e, term))
    for m in PCT_RE.finditer(norm) if g_pct else ():
        p = m.group("p") or m.group("p2")
        t = m.group("t") or m.group("t2")
        pe = m.end("p") if m.group("p") else m.end()
        ps = m.start() if m.group("p") else m.start("p2")
        add("material_pct", m.start(), m.end(), float(p), check=(ps, pe), term=t)
    for m in SPEC_RE.finditer(norm) if g_spec else ():
        n = m.group("n") or m.group("n2")
        u = m.group("u") or m.group("u2")
        add("spec", m.start(), m.end(), float(n), unit=u)
    out.sort(key=lambda c: c.start)
    return out


def _prices(norm: str, ctx_norm: str, mask: _Mask, add, gated: bool = True) -> None:  # noqa: ANN001
    seen: list[tuple[int, int]] = []
    if gated:  # the literal words each PRICE_RES pattern needs (currency, unit, 到手-verbs, price cues)
        rmb = "rmb" in norm
        flags = (rmb or "$" in norm or "¥" in norm,
                 rmb or "元" in norm or "块" in norm or "圆" in norm,
                 "到手" in norm or "拿下" in norm or "入手" in norm or "带走" in norm or "带回家" in norm,
                 "价" in norm or "到手" in norm or "才" in norm or "现在" in norm or "只要" in norm or "卖" in norm
                 or "券后" in norm or "折后" in norm or "仅需" in norm or "目前" in norm or "活动期间" in norm)
    else:
        flags = (True, True, True, True)
    for rx, on in zip(PRICE_RES, flags, strict=True):
        if not on:
            continue
        for m in rx.finditer(norm):
            s, e = m.start(), m.end()
            if any(not (e <= a or s >= b) for a, b in seen) or not mask.free(s, e):
                continue
            n = parse_number(m.group("num"))
            if n is None or n <= 0:
                continue
            ns = m.start("num")
            pre = clause_prefix(ctx_norm, ns, 6)
            if BUNDLE_RE.search(clause_prefix(ctx_norm, ns, 30)):
                continue  # a bundle/total price ("两件活动价一共658元") is not one product's price
            if not PRICE_CUE_END.search(pre):
                if PRICE_EXCLUDE_PREFIX.search(pre) or MULTI_QTY.search(pre):
                    continue
                if PRICE_EXCLUDE_SUFFIX.match(ctx_norm[e:e + 5]):
                    continue
            seen.append((s, e))
            add("price", s, e, n)
