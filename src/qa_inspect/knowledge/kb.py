"""Knowledge base files per shop (``rules/knowledge/<shop_id>/``): catalog, policies, FAQ.

Merchants maintain these in spreadsheets, often with Chinese headers, so the catalog accepts
canonical or Chinese column names (CSV, XLSX or YAML). Everything is validated with pydantic
(extra="forbid"); an error names the file, the row (or key path) and the field.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qa_inspect.config import config_error_from_validation, load_shops, load_yaml
from qa_inspect.errors import ConfigError

KNOWLEDGE_DIR = "knowledge"
CATALOG_NAMES = ("catalog.csv", "catalog.xlsx", "catalog.yaml", "catalog.yml")
POLICIES_FILE = "policies.yaml"
FAQ_FILE = "faq.csv"

# Chinese spreadsheet headers -> canonical field names (docs/knowledge.md lists them).
CATALOG_HEADERS: dict[str, str] = {
    "商品编码": "sku", "商品名称": "name", "别名": "aliases", "价格": "price", "活动价": "promo_price",
    "活动开始": "promo_start", "活动结束": "promo_end", "材质": "material", "规格": "specs",
    "尺码": "sizes", "颜色": "colors", "库存": "stock", "发货时效(小时)": "dispatch_hours",
    "保修(月)": "warranty_months", "赠品": "gifts",
    # Traditional spellings a Taiwan shop's sheet would use
    "商品編碼": "sku", "商品名稱": "name", "別名": "aliases", "價格": "price", "活動價": "promo_price",
    "活動開始": "promo_start", "活動結束": "promo_end", "材質": "material", "規格": "specs",
    "尺碼": "sizes", "顏色": "colors", "庫存": "stock", "發貨時效(小時)": "dispatch_hours",
    "出貨時效(小時)": "dispatch_hours", "保固(月)": "warranty_months",
    "贈品": "gifts",
}
FAQ_HEADERS: dict[str, str] = {"问题": "question", "答案": "answer", "关键信息": "key_facts",
                               "問題": "question", "答案 ": "answer", "關鍵資訊": "key_facts",
                               "關鍵信息": "key_facts"}
_LIST_FIELDS = ("aliases", "sizes", "colors", "gifts")


def _split_list(v: Any) -> Any:
    if v is None:
        return []
    if isinstance(v, str):
        return [p.strip() for p in v.split("|") if p.strip()]
    return v


def _empty_to_none(v: Any) -> Any:
    if isinstance(v, str) and not v.strip():
        return None
    return v


class Product(BaseModel):
    """One catalog row. Empty cell = unknown (None / empty list): never checked."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    sku: str = Field(min_length=1)
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    price: float | None = Field(default=None, gt=0)
    promo_price: float | None = Field(default=None, gt=0)
    promo_start: dt.date | None = None
    promo_end: dt.date | None = None
    material: str | None = None
    specs: dict[str, str] = Field(default_factory=dict)
    sizes: list[str] = Field(default_factory=list)
    colors: list[str] = Field(default_factory=list)
    stock: int | None = Field(default=None, ge=0)
    dispatch_hours: float | None = Field(default=None, gt=0)
    warranty_months: float | None = Field(default=None, ge=0)
    gifts: list[str] = Field(default_factory=list)

    @field_validator("*", mode="before")
    @classmethod
    def _blank(cls, v: Any) -> Any:
        return _empty_to_none(v)

    @field_validator(*_LIST_FIELDS, mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("specs", mode="before")
    @classmethod
    def _specs(cls, v: Any) -> Any:
        if v is None:
            return {}
        if isinstance(v, str):
            out: dict[str, str] = {}
            for part in v.split("|"):
                part = part.strip()
                if not part:
                    continue
                if "=" not in part:
                    raise ValueError(f"spec '{part}' is not key=value")
                k, val = part.split("=", 1)
                out[k.strip()] = val.strip()
            return out
        return v

    @model_validator(mode="after")
    def _promo(self) -> Product:
        if self.promo_price is not None and (self.promo_start is None or self.promo_end is None):
            raise ValueError("promo_price needs promo_start and promo_end")
        if self.promo_start and self.promo_end and self.promo_end < self.promo_start:
            raise ValueError("promo_end is before promo_start")
        return self

    def promo_active(self, day: dt.date | None) -> bool:
        """Promo price valid on ``day`` (unknown day: give the agent the benefit of the doubt)."""
        if self.promo_price is None or self.promo_start is None or self.promo_end is None:
            return False
        return day is None or self.promo_start <= day <= self.promo_end


class Promotion(BaseModel):
    """Shop-wide 满减 / coupon / discount, valid between dates (inclusive)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    kind: Literal["full_reduction", "coupon", "discount"]
    threshold: float | None = Field(default=None, ge=0)
    amount: float | None = Field(default=None, gt=0)
    rate: float | None = Field(default=None, gt=0, le=1)
    start: dt.date | None = None
    end: dt.date | None = None

    @model_validator(mode="after")
    def _fields(self) -> Promotion:
        if self.kind in ("full_reduction", "coupon") and self.amount is None:
            raise ValueError(f"a {self.kind} promotion needs 'amount'")
        if self.kind == "discount" and self.rate is None:
            raise ValueError("a discount promotion needs 'rate' (e.g. 0.8 for 8折)")
        if self.start and self.end and self.end < self.start:
            raise ValueError("end is before start")
        return self

    def active(self, day: dt.date | None) -> bool:
        if day is None:
            return True
        return (self.start is None or self.start <= day) and (self.end is None or day <= self.end)


class Policies(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    return_days: int | None = Field(default=None, ge=0)
    return_kind: str | None = None
    return_exclusions: list[str] = Field(default_factory=list)
    free_shipping_threshold: float | None = Field(default=None, ge=0)
    shipping_fee: float | None = Field(default=None, ge=0)
    freight_insurance: bool | None = None
    promotions: list[Promotion] = Field(default_factory=list)


class FaqEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    key_facts: list[str] = Field(default_factory=list)

    @field_validator("key_facts", mode="before")
    @classmethod
    def _facts(cls, v: Any) -> Any:
        return _split_list(v)


# --- readers ------------------------------------------------------------------------------


def _read_csv_rows(path: Path, headers: dict[str, str], allowed: set[str]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) with canonical keys; unknown headers are a ConfigError naming them."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path)) from None
    reader = csv.reader(text.splitlines())
    rows = list(reader)
    if not rows:
        raise ConfigError("empty file (needs a header row)", file=str(path))
    return _map_rows(path, rows[0], [(i + 2, r) for i, r in enumerate(rows[1:])], headers, allowed)


def _map_rows(path: Path, header: list[Any], body: list[tuple[int, list[Any]]], headers: dict[str, str],
              allowed: set[str]) -> list[tuple[int, dict[str, Any]]]:
    cols: list[str] = []
    for h in header:
        name = str(h).strip() if h is not None else ""
        canon = name if name in allowed else headers.get(name)
        if canon is None:
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"unknown column '{name}' (known: {known} or their Chinese names)",
                              file=str(path), key_path="header")
        if canon in cols:
            raise ConfigError(f"column '{name}' given twice", file=str(path), key_path="header")
        cols.append(canon)
    out = []
    for line, r in body:
        if not any(str(c).strip() for c in r if c is not None):
            continue  # blank line
        if len(r) > len(cols):
            raise ConfigError(f"{len(r)} cells but {len(cols)} columns", file=str(path), key_path=f"row {line}")
        out.append((line, {c: r[i] if i < len(r) else None for i, c in enumerate(cols)}))
    return out


def _read_xlsx_rows(path: Path, headers: dict[str, str], allowed: set[str]) -> list[tuple[int, dict[str, Any]]]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types for a bad file
        raise ConfigError(f"cannot open workbook: {exc}", file=str(path)) from None
    try:
        ws = wb.worksheets[0]
        rows = [list(r) for r in ws.iter_rows(values_only=True)]
    except Exception as exc:  # noqa: BLE001 - read-only sheets parse lazily: a bad cell fails here
        raise ConfigError(f"cannot read the first sheet: {type(exc).__name__}: {exc}", file=str(path)) from None
    finally:
        wb.close()
    if not rows:
        raise ConfigError("empty sheet (needs a header row)", file=str(path))
    body = []
    for i, r in enumerate(rows[1:]):
        cells = []
        for c in r:
            if isinstance(c, dt.datetime):
                c = c.date().isoformat()
            elif isinstance(c, dt.date):
                c = c.isoformat()
            elif isinstance(c, float) and c.is_integer():
                c = str(int(c))
            cells.append("" if c is None else str(c))
        body.append((i + 2, cells))
    return _map_rows(path, rows[0], body, headers, allowed)


def _validate_rows(path: Path, rows: list[tuple[int, dict[str, Any]]], model: type[BaseModel],
                   what: str) -> list[Any]:
    out = []
    for line, row in rows:
        try:
            out.append(model.model_validate(row))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(row)"
            rid = row.get("sku") if what == "catalog" else None
            raise ConfigError(f"{err['msg']} (value {row.get(err['loc'][0]) if err['loc'] else ''!r})",
                              file=str(path), rule_id=str(rid)[:40] if rid else None,
                              key_path=f"row {line}.{field}") from None
    return out


def read_catalog(path: Path) -> list[Product]:
    """Products from catalog.csv / .xlsx / .yaml (a list, or ``{products: [...]}``)."""
    allowed = set(Product.model_fields)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv_rows(path, CATALOG_HEADERS, allowed)
    elif suffix == ".xlsx":
        rows = _read_xlsx_rows(path, CATALOG_HEADERS, allowed)
    elif suffix in (".yaml", ".yml"):
        data = load_yaml(path)
        if isinstance(data, dict) and set(data) == {"products"}:
            data = data["products"]
        if not isinstance(data, list):
            raise ConfigError("expected a list of products (or 'products: [...]')", file=str(path))
        rows = []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise ConfigError("each product must be a mapping", file=str(path), key_path=f"[{i}]")
            mapped = {}
            for k, v in item.items():
                canon = k if k in allowed else CATALOG_HEADERS.get(str(k))
                if canon is None:
                    raise ConfigError("unknown key", file=str(path), key_path=f"[{i}].{k}")
                mapped[canon] = v
            rows.append((i, mapped))
        products = []
        for i, row in rows:
            try:
                products.append(Product.model_validate(row))
            except ValidationError as exc:
                raise config_error_from_validation(exc, file=str(path), rule_id=row.get("sku"),
                                                   prefix=(i,)) from None
        return _check_unique(path, products)
    else:
        raise ConfigError("catalog must be .csv, .xlsx or .yaml", file=str(path))
    return _check_unique(path, _validate_rows(path, rows, Product, "catalog"))


def _check_unique(path: Path, products: list[Product]) -> list[Product]:
    seen: set[str] = set()
    for p in products:
        if p.sku in seen:
            raise ConfigError(f"duplicate sku '{p.sku}'", file=str(path), rule_id=p.sku, key_path="sku")
        seen.add(p.sku)
    return products


def read_policies(path: Path) -> Policies:
    data = load_yaml(path)
    if data is None:  # an empty (e.g. truncated) file would silently switch the policy checks off
        raise ConfigError("empty file; delete it if the shop has no policies to check", file=str(path))
    try:
        return Policies.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, file=str(path)) from None


def read_faq(path: Path) -> list[FaqEntry]:
    rows = _read_csv_rows(path, FAQ_HEADERS, set(FaqEntry.model_fields))
    return _validate_rows(path, rows, FaqEntry, "faq")


def find_catalog(shop_dir: Path) -> Path | None:
    found = [shop_dir / n for n in CATALOG_NAMES if (shop_dir / n).exists()]
    if len(found) > 1:
        raise ConfigError(f"more than one catalog: {', '.join(p.name for p in found)}; keep one",
                          file=str(shop_dir))
    return found[0] if found else None


def read_shop_files(shop_dir: Path) -> tuple[list[Product], Policies, list[FaqEntry]]:
    """The three files of one shop; each is optional (missing = nothing known)."""
    cat = find_catalog(shop_dir)
    products = read_catalog(cat) if cat else []
    pol_path = shop_dir / POLICIES_FILE
    policies = read_policies(pol_path) if pol_path.exists() else Policies()
    faq_path = shop_dir / FAQ_FILE
    faq = read_faq(faq_path) if faq_path.exists() else []
    return products, policies, faq


def shop_settings(rules_dir: Path) -> dict[str, tuple[str, str]]:
    """(timezone, currency) per shop from shops.yaml: dates and money are shown shop-local."""
    return {sid: (s.timezone, s.currency) for sid, s in load_shops(rules_dir).items()}
