"""Knowledge-base files: loading, header mapping, formats and located validation errors."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import openpyxl
import pytest
import yaml

from qa_inspect.errors import ConfigError
from qa_inspect.knowledge import catalog_words, check_knowledge, load_knowledge
from qa_inspect.knowledge.kb import read_catalog, read_faq, read_policies

CANON = ("sku,name,aliases,price,promo_price,promo_start,promo_end,material,specs,sizes,colors,stock,"
         "dispatch_hours,warranty_months,gifts\n")
ROW = "T-1,测试四件套,测试套|小四件,399,299,2026-11-20,2026-11-30,100%棉,支数=40支,1.8m床,白色,5,48,,洗衣袋\n"


def _rules(tmp_path: Path, catalog: str = CANON + ROW, *, policies: str | None = None,
           faq: str | None = None, shop: str = "s1") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "shops.yaml").write_text(yaml.safe_dump({"shops": [
        {"shop_id": shop, "name": "测试店", "platform": "tmall"}]}, allow_unicode=True), encoding="utf-8")
    d = tmp_path / "knowledge" / shop
    d.mkdir(parents=True)
    (d / "catalog.csv").write_text(catalog, encoding="utf-8-sig")
    if policies is not None:
        (d / "policies.yaml").write_text(policies, encoding="utf-8")
    if faq is not None:
        (d / "faq.csv").write_text(faq, encoding="utf-8")
    return tmp_path


def test_bundled_knowledge_loads(rules_dir: Path, kbs: dict) -> None:
    assert {"tmall_yuejia", "jd_jike", "tw_meiyan"} <= set(kbs)
    yj = kbs["tmall_yuejia"]  # written with Chinese headers
    assert yj.products["YJ-001"].price == 299 + 100
    assert yj.products["YJ-001"].promo_price == 299
    assert "纯棉四件套" in yj.products["YJ-001"].aliases
    assert yj.policies.free_shipping_threshold == 99
    assert kbs["tw_meiyan"].timezone == "Asia/Taipei"
    summary = {s.shop_id: s for s in check_knowledge(rules_dir)}
    assert summary["jd_jike"].products == len(kbs["jd_jike"].products)


def test_kb_pickles_for_workers(kbs: dict) -> None:
    kb = kbs["tw_meiyan"]
    kb2 = pickle.loads(pickle.dumps(kb))
    # Traditional catalog names match Simplified/normalised text after the round trip
    assert kb2.find_products("玻尿酸精华多少钱")[0][2] == ("MY-01",)
    assert kb2.faq_index is not None and kb2.faq_index.match("多久出货") is not None


def test_catalog_words_include_names_and_aliases(kbs: dict) -> None:
    words = catalog_words(kbs)
    assert "纯棉四件套" in words and "Air Pro" not in words  # words with spaces cannot be jieba words
    assert "積雪草修護霜" in words and "积雪草修护霜" in words


def test_chinese_headers_and_traditional_headers(tmp_path: Path) -> None:
    cat = "商品編碼,商品名稱,價格,材質,庫存\nT-9,測試精華,890,玻尿酸,3\n"
    kb = load_knowledge(_rules(tmp_path, cat))["s1"]
    p = kb.products["T-9"]
    assert (p.name, p.price, p.material, p.stock) == ("測試精華", 890, "玻尿酸", 3)
    assert p.warranty_months is None  # absent column = unknown


def test_xlsx_and_yaml_catalogs(tmp_path: Path) -> None:
    d = tmp_path / "x"
    d.mkdir()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["商品编码", "商品名称", "价格", "活动价", "活动开始", "活动结束"])
    import datetime as dt

    ws.append(["X-1", "表格商品", 100, 80, dt.datetime(2026, 11, 20), dt.datetime(2026, 11, 30)])
    wb.save(d / "catalog.xlsx")
    [p] = read_catalog(d / "catalog.xlsx")
    assert p.promo_start == dt.date(2026, 11, 20) and p.promo_price == 80
    (d / "catalog.yaml").write_text("products:\n  - {sku: Y-1, name: 清单商品, price: 50, sizes: 'S|M'}\n",
                                    encoding="utf-8")
    [q] = read_catalog(d / "catalog.yaml")
    assert q.sizes == ["S", "M"]


def test_bad_price_names_file_row_and_field(tmp_path: Path) -> None:
    bad = CANON + ROW + ROW.replace("T-1", "T-2").replace(",399,", ",三百,")
    with pytest.raises(ConfigError) as exc:
        load_knowledge(_rules(tmp_path, bad))
    msg = str(exc.value)
    assert "catalog.csv" in msg and "row 3.price" in msg and "T-2" in msg


def test_unknown_column_and_duplicate_sku(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown column '备注'"):
        load_knowledge(_rules(tmp_path / "a", CANON.rstrip("\n") + ",备注\n" + ROW.rstrip("\n") + ",x\n"))
    with pytest.raises(ConfigError, match="duplicate sku 'T-1'"):
        load_knowledge(_rules(tmp_path / "b", CANON + ROW + ROW))


def test_promo_price_needs_dates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="promo_price needs promo_start"):
        load_knowledge(_rules(tmp_path, CANON + ROW.replace("2026-11-20,2026-11-30", ",")))


def test_policies_errors_have_key_paths(tmp_path: Path) -> None:
    p = tmp_path / "policies.yaml"
    p.write_text("return_days: 7\npromotions:\n  - {name: x, kind: coupon, threshold: 100}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"promotions\[0\]"):
        read_policies(p)
    p.write_text("return_dayz: 7\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="return_dayz: unknown key"):
        read_policies(p)


def test_faq_requires_answer(tmp_path: Path) -> None:
    f = tmp_path / "faq.csv"
    f.write_text("问题,答案,关键信息\n包邮吗,,满99包邮\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"row 2\.answer"):
        read_faq(f)


def test_unknown_shop_folder_is_an_error(tmp_path: Path, rules_dir: Path) -> None:
    root = tmp_path / "r"
    shutil.copytree(rules_dir / "knowledge", root / "knowledge")
    shutil.copy(rules_dir / "shops.yaml", root / "shops.yaml")
    (root / "knowledge" / "typo_shop").mkdir()
    with pytest.raises(ConfigError, match="unknown shop 'typo_shop'"):
        load_knowledge(root)
