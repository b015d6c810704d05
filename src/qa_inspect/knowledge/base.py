"""The compiled knowledge base of one shop and loading every shop's KB from a rules folder.

Matchers (product-name automaton, material lexicon, FAQ vectors) are built once per
KnowledgeBase when it is loaded, never per message, and travel with it to workers (picklable).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import ahocorasick

from qa_inspect.config import resolve_rules_dir
from qa_inspect.errors import ConfigError
from qa_inspect.knowledge.faq import FaqIndex
from qa_inspect.knowledge.kb import (
    FAQ_FILE,
    KNOWLEDGE_DIR,
    FaqEntry,
    Policies,
    Product,
    read_shop_files,
    shop_settings,
)
from qa_inspect.knowledge.numbers import fmt_num
from qa_inspect.text.normalize import normalize_text

# Material lexicon: a term -> the material families it is consistent with. A claimed term
# contradicts the KB when none of its families occurs in the product's KB material text.
# (Terms are normalised like messages, so Traditional spellings match too.)
MATERIAL_TERMS: dict[str, frozenset[str]] = {
    t: frozenset(f.split(","))
    for t, f in {
        "纯棉": "cotton", "全棉": "cotton", "100%棉": "cotton", "长绒棉": "cotton", "新疆棉": "cotton",
        "新疆长绒棉": "cotton", "水洗棉": "cotton", "棉质": "cotton", "精梳棉": "cotton",
        "涤纶": "polyester", "聚酯纤维": "polyester", "化纤": "polyester", "牛奶绒": "polyester",
        "珊瑚绒": "polyester", "羽丝绒": "polyester",
        "天丝": "lyocell", "莱赛尔": "lyocell", "冰丝": "lyocell",
        "真丝": "silk", "桑蚕丝": "silk", "蚕丝": "silk", "丝绸": "silk",
        "鹅绒": "goose", "白鹅绒": "goose", "鸭绒": "duck", "白鸭绒": "duck", "羽绒": "goose,duck",
        "乳胶": "latex", "天然乳胶": "latex", "记忆棉": "memory_foam", "慢回弹": "memory_foam",
        "海绵": "sponge", "大豆纤维": "soy", "亚麻": "linen", "羊毛": "wool", "竹纤维": "bamboo",
        "铝合金": "aluminium", "不锈钢": "steel", "钛合金": "titanium", "塑料": "pc,abs",
        "pc": "pc", "abs": "abs", "硅胶": "silicone", "蛋白皮": "protein_leather", "真皮": "leather",
        "尼龙": "nylon", "编织": "nylon", "碳纤维": "carbon", "金属": "aluminium,steel,titanium",
        "全金属": "aluminium,steel,titanium",
        # skincare: key ingredients (a claimed key ingredient the KB does not list is wrong)
        "玻尿酸": "hyaluronic", "透明质酸": "hyaluronic", "水杨酸": "salicylic", "果酸": "aha",
        "a醇": "retinol", "视黄醇": "retinol", "维他命c": "vitc", "维生素c": "vitc", "维c": "vitc",
        "vc": "vitc", "维他命b5": "vitb5", "b5": "vitb5", "泛醇": "vitb5", "烟碱醯胺": "niacinamide",
        "烟碱酰胺": "niacinamide", "烟酰胺": "niacinamide", "b3": "niacinamide", "神经醯胺": "ceramide",
        "神经酰胺": "ceramide", "积雪草": "centella", "胜肽": "peptide", "六胜肽": "peptide", "多肽": "peptide",
        "氧化锌": "mineral_filter", "二氧化钛": "mineral_filter", "物理防晒": "mineral_filter",
        "化学防晒": "chemical_filter", "胺基酸": "amino", "氨基酸": "amino", "角鲨烷": "squalane",
        "植物油": "plant_oil", "咖啡因": "caffeine",
    }.items()
}

NORM_MATERIAL_TERMS = frozenset(normalize_text(t) for t in MATERIAL_TERMS)

# Spec units an agent quotes with numbers; the key is the normalised unit as written.
SPEC_UNITS = ("mah", "wh", "w", "ml", "db", "g", "cm", "斤", "片", "支", "ipx", "spf")


@dataclass
class KnowledgeBase:
    """Everything known about one shop, with its matchers compiled."""

    shop_id: str
    products: dict[str, Product]
    policies: Policies
    faq: list[FaqEntry]
    timezone: str = "Asia/Shanghai"
    files: list[str] = field(default_factory=list)
    currency: str = "CNY"
    # compiled
    names: ahocorasick.Automaton | None = None  # normalised name/alias -> (skus, strong)
    materials: ahocorasick.Automaton | None = None
    material_families: dict[str, frozenset[str]] = field(default_factory=dict)
    material_pcts: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    spec_values: dict[str, dict[str, set[float]]] = field(default_factory=dict)
    faq_index: FaqIndex | None = None
    sku_names: dict[str, list[str]] = field(default_factory=dict)  # normalised name + aliases
    faq_skus: list[frozenset[str]] = field(default_factory=list)  # products an FAQ question names

    @classmethod
    def build(cls, shop_id: str, products: list[Product], policies: Policies, faq: list[FaqEntry],
              timezone: str = "Asia/Shanghai", files: list[str] | None = None,
              currency: str = "CNY") -> KnowledgeBase:
        kb = cls(shop_id, {p.sku: p for p in products}, policies, faq, timezone, files or [], currency)
        kb._compile()
        return kb

    # -- compile -------------------------------------------------------------------------
    def _compile(self) -> None:
        keys: dict[str, set[str]] = {}
        for p in self.products.values():
            self.sku_names[p.sku] = [normalize_text(w).replace(" ", "") for w in [p.name, *p.aliases]]
            for w in [p.name, *p.aliases]:
                nw = normalize_text(w).strip()
                if len(nw) >= 2:
                    keys.setdefault(nw, set()).add(p.sku)
        auto = ahocorasick.Automaton()
        for k, skus in keys.items():
            auto.add_word(k, (k, tuple(sorted(skus))))
        if keys:
            auto.make_automaton()
            self.names = auto
        mat = ahocorasick.Automaton()
        for t in MATERIAL_TERMS:
            mat.add_word(normalize_text(t), normalize_text(t))
        mat.make_automaton()
        self.materials = mat
        for p in self.products.values():
            if p.material:
                fams: set[str] = set()
                for _s, _e, term in self.find_materials(normalize_text(p.material)):
                    fams |= MATERIAL_TERMS.get(term, frozenset())
                self.material_families[p.sku] = frozenset(fams)
                self.material_pcts[p.sku] = [
                    (float(m.group(1)), m.group(2))
                    for m in re.finditer(r"(\d+(?:\.\d+)?)%\s*([^\s+()（）,，/]{1,8})", normalize_text(p.material))
                ]
            self.spec_values[p.sku] = spec_values(p)
        self.faq_skus = [frozenset(s for _, _, skus, _ in self.find_products(normalize_text(e.question))
                                   for s in skus) for e in self.faq]
        if self.faq:
            try:
                self.faq_index = FaqIndex.build(self.faq, extra_words=catalog_words({self.shop_id: self}),
                                                product_names=[w for p in self.products.values()
                                                               for w in [p.name, *p.aliases]])
            except ValueError as exc:
                # scikit-learn: "empty vocabulary" when no question has a single word (e.g. only "？？").
                faq_file = next((f for f in self.files if Path(f).name == FAQ_FILE), FAQ_FILE)
                raise ConfigError(f"cannot index the FAQ questions ({exc})", file=faq_file,
                                  key_path="question") from None

    # -- lookups -------------------------------------------------------------------------
    def find_products(self, norm: str) -> list[tuple[int, int, tuple[str, ...], str]]:
        """Non-overlapping product mentions (longest first): (start, end, skus, matched key)."""
        if self.names is None or not norm:
            return []
        hits = [(end - len(key) + 1, end + 1, skus, key) for end, (key, skus) in self.names.iter(norm)]
        if len(hits) < 2:  # most texts: nothing to choose between (same result, no sorting)
            return hits
        hits.sort(key=lambda h: (-(h[1] - h[0]), h[0]))
        taken: list[tuple[int, int]] = []
        out = []
        for h in hits:
            if all(h[1] <= s or h[0] >= e for s, e in taken):
                taken.append((h[0], h[1]))
                out.append(h)
        return sorted(out)

    def find_materials(self, norm: str) -> list[tuple[int, int, str]]:
        """Longest non-overlapping material terms in ``norm``: (start, end, term)."""
        if self.materials is None:
            return []
        hits = [(end - len(t) + 1, end + 1, t) for end, t in self.materials.iter(norm)]
        if not hits:  # most texts (same result, no sorting)
            return hits
        hits.sort(key=lambda h: (-(h[1] - h[0]), h[0]))
        taken: list[tuple[int, int, str]] = []
        for h in hits:
            if all(h[1] <= s or h[0] >= e for s, e, _ in taken):
                # ASCII terms (pc, abs) only as whole words
                if h[2].isascii() and ((h[0] > 0 and _ascii_alnum(norm[h[0] - 1]))
                                       or (h[1] < len(norm) and _ascii_alnum(norm[h[1]]))):
                    continue
                taken.append(h)
        return sorted(taken)

    def promotions_on(self, day: dt.date | None) -> list:
        return [p for p in self.policies.promotions if p.active(day)]

    def owners_of(self, fragment: str) -> set[str]:
        """SKUs whose name or an alias contains ``fragment`` ("60支" -> the 60支 products)."""
        f = fragment.replace(" ", "")
        return {sku for sku, names in self.sku_names.items() if any(f in n for n in names)}

    def money(self, v: float) -> str:
        """'299 元' (CNY) or 'NT$690' (TWD) for explanations."""
        n = fmt_num(round(v, 2))
        return f"NT${n}" if self.currency == "TWD" else f"{n} 元"

    def price_text(self, sku: str, day: dt.date | None) -> str:
        """'四件套 售价 399 元（活动价 299 元，11-20~11-30）' for explanations."""
        p = self.products[sku]
        s = f"{p.name} 售价 {self.money(p.price)}" if p.price else f"{p.name} 售价未知"
        if p.promo_price and p.promo_start and p.promo_end:
            span = f"{p.promo_start:%m-%d}~{p.promo_end:%m-%d}"
            state = "" if p.promo_active(day) else "，当日不在活动期"
            s += f"（活动价 {self.money(p.promo_price)}，{span}{state}）"
        return s


def _ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


_SPEC_NUM = re.compile(r"(\d+(?:\.\d+)?)\s*(mah|wh|w|ml|db|g|cm|斤|片|支)(?![a-z])")
_SPEC_CODE = re.compile(r"(ipx|spf)\s*(\d+)")


def spec_values(p: Product) -> dict[str, set[float]]:
    """Numbers per unit in a product's specs and sizes (e.g. {'mah': {20000}, 'w': {22.5}})."""
    out: dict[str, set[float]] = {}
    texts = [f"{k}={v}" for k, v in p.specs.items()] + list(p.sizes)
    for t in texts:
        n = normalize_text(t)
        for m in _SPEC_NUM.finditer(n):
            out.setdefault(m.group(2), set()).add(float(m.group(1)))
        for m in _SPEC_CODE.finditer(n):
            out.setdefault(m.group(1), set()).add(float(m.group(2)))
        # "续航=单次8小时/配合充电盒32小时" -> battery hours
        if re.search(r"续航|播放|使用时间", n):
            for m in re.finditer(r"(\d+(?:\.\d+)?)\s*小时", n):
                out.setdefault("续航小时", set()).add(float(m.group(1)))
    return out


def catalog_words(kbs: dict[str, KnowledgeBase]) -> list[str]:
    """Product names and aliases (as written and normalised) for the jieba user dictionary."""
    words: set[str] = set()
    for kb in kbs.values():
        for p in kb.products.values():
            for w in [p.name, *p.aliases]:
                w = w.strip()
                if w and " " not in w:
                    words.add(w)
                    words.add(normalize_text(w))
    return sorted(words)


def load_shop_kb(shop_dir: Path, shop_id: str, timezone: str = "Asia/Shanghai",
                 currency: str = "CNY") -> KnowledgeBase:
    products, policies, faq = read_shop_files(shop_dir)
    files = sorted(str(f) for f in shop_dir.iterdir() if f.is_file())
    return KnowledgeBase.build(shop_id, products, policies, faq, timezone, files, currency)


def load_knowledge(rules_dir: Path | str | None) -> dict[str, KnowledgeBase]:
    """Every shop's KB under ``<rules>/knowledge/<shop_id>/`` (no folder = no knowledge checks).

    Shop time zones come from shops.yaml so promotion dates are compared on the shop-local date;
    a KB folder for a shop that shops.yaml does not list is a ConfigError (a typo would
    otherwise silently disable the checks).
    """
    root = resolve_rules_dir(rules_dir)
    kdir = root / KNOWLEDGE_DIR
    if not kdir.is_dir():
        return {}
    shops = shop_settings(root)
    out: dict[str, KnowledgeBase] = {}
    for d in sorted(p for p in kdir.iterdir() if p.is_dir()):
        if shops and d.name not in shops:
            raise ConfigError(f"knowledge folder for unknown shop '{d.name}' (not in shops.yaml: "
                              f"{', '.join(sorted(shops))})", file=str(d))
        tz, cur = shops.get(d.name, ("Asia/Shanghai", "CNY"))
        out[d.name] = load_shop_kb(d, d.name, tz, cur)
    return out


@dataclass
class KbSummary:
    shop_id: str
    products: int
    faq: int
    promotions: int
    files: list[str]


def check_knowledge(rules_dir: Path | str | None) -> list[KbSummary]:
    """Validate every shop's KB (raises ConfigError on the first problem) and summarise it."""
    kbs = load_knowledge(rules_dir)
    return [KbSummary(k.shop_id, len(k.products), len(k.faq), len(k.policies.promotions), k.files)
            for k in kbs.values()]
