"""The bundled sample logs are reproducible and hold the world the other stages are tested on.

Regenerates into a tmp dir and compares bytes with the committed files, so a change to the
generator or the knowledge base that is not followed by a regeneration fails here.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from openpyxl import load_workbook

from qa_inspect.config import load_shops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_sample_logs.py"
TRUTH = REPO / "tests" / "data" / "sample_truth.csv"
QN_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (.*)$")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample_logs", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("gen")
    files = _load_script().generate(out / "sample_logs", out / "truth.csv", REPO / "rules")
    return out, files


def test_regenerates_byte_identically(generated: tuple[Path, list[Path]], sample_logs_dir: Path) -> None:
    out, files = generated
    assert len(files) == 10  # 2 txt + 1 csv + 3 xlsx + 3 jsonl + truth
    for f in files:
        committed = TRUTH if f.name == "truth.csv" else sample_logs_dir / f.name
        assert committed.exists(), f"{committed} missing: run scripts/make_sample_logs.py"
        assert f.read_bytes() == committed.read_bytes(), f"{f.name} differs: rerun scripts/make_sample_logs.py"


def _qianniu_rows(path: Path, prefix: str) -> list[tuple[str, str, datetime]]:
    """(buyer, sender, ts) of well-formed message lines."""
    rows, buyer = [], ""
    for ln in path.read_text(encoding="utf-8").splitlines()[1:]:
        if ln.startswith("===== 买家:"):
            buyer = ln.removeprefix("===== 买家:").removesuffix(" =====")
            continue
        m = QN_LINE.match(ln)
        if not m:
            continue
        try:
            ts = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
        sender = m.group(2).split(": ", 1)[0]
        if sender == buyer or sender.startswith(prefix):
            rows.append((buyer, sender, ts))
    return rows


def test_world_counts(sample_logs_dir: Path) -> None:
    convs: dict[str, set[str]] = {}
    agents: set[str] = set()
    nights: set[str] = set()
    for p in sorted(sample_logs_dir.glob("*.txt")):
        rows = _qianniu_rows(p, "悦家家居旗舰店:")
        last: dict[str, datetime] = {}
        for buyer, sender, ts in sorted(rows, key=lambda r: (r[0], r[2])):
            if buyer not in last or ts - last[buyer] > timedelta(minutes=10):
                convs.setdefault("tmall_yuejia", set()).add(f"{buyer}:{ts}")
            last[buyer] = ts
            if sender != buyer:
                agents.add(sender)
            nights.add(ts.date().isoformat())
    for p in sorted(sample_logs_dir.glob("*.csv")):
        with p.open(encoding="gb18030", newline="") as fh:
            for r in csv.DictReader(fh):
                convs.setdefault("tmall_yuejia", set()).add(r["会话编号"])
                agents.add(r["客服账号"])
    for p in sorted(sample_logs_dir.glob("*.xlsx")):
        ws = load_workbook(p, read_only=True)["聊天记录"]
        for r in ws.iter_rows(min_row=2, values_only=True):
            convs.setdefault("jd_jike", set()).add(r[1])
            agents.add(r[2])
            if isinstance(r[4], datetime):
                nights.add(r[4].date().isoformat())
    for p in sorted(sample_logs_dir.glob("*.jsonl")):
        for ln in p.read_text(encoding="utf-8").splitlines():
            d = json.loads(ln)
            convs.setdefault(d["shop"], set()).add(d["conversation_id"])
            agents.add(d["agent"])
    assert sorted(convs) == ["jd_jike", "tmall_yuejia", "tw_meiyan"]
    assert sum(len(v) for v in convs.values()) >= 300
    assert all(len(v) >= 90 for v in convs.values())
    assert len(agents) >= 8
    assert {"2026-11-23", "2026-11-24", "2026-11-25"} <= nights


def test_truth_covers_every_scored_kind_and_quotes_the_files(sample_logs_dir: Path) -> None:
    with TRUTH.open(encoding="utf-8", newline="") as fh:
        truth = list(csv.DictReader(fh))
    kinds = {r["kind"] for r in truth}
    wanted = {"wrong_price", "wrong_material", "wrong_warranty", "wrong_return", "wrong_dispatch",
              "wrong_shipping", "deflection", "rude", "buyer_negation_trap", "agent_quote_trap",
              "agent_negation_trap", "positive_context_trap", "slow_first_reply", "slow_reply", "unanswered",
              "proactive_selling", "template_reply", "partial_answer", "cuifu", "greeting", "closing",
              "empathy_apology", "bad_row_empty_text", "bad_row_bad_time", "bad_row_unknown_role"}
    assert wanted <= kinds, wanted - kinds
    # every planted message really is in its file (XLSX checked through its cell text)
    texts: dict[str, str] = {}
    for p in sample_logs_dir.iterdir():
        if p.suffix == ".xlsx":
            ws = load_workbook(p, read_only=True)["聊天记录"]
            texts[p.name] = "\n".join(str(r[6]) for r in ws.iter_rows(min_row=2, values_only=True))
        elif p.suffix in (".txt", ".jsonl"):
            texts[p.name] = p.read_text(encoding="utf-8")
        elif p.suffix == ".csv":
            texts[p.name] = p.read_bytes().decode("gb18030")
    for r in truth:
        if r["message_text"]:
            needle = r["message_text"] if not r["file"].endswith(".jsonl") else json.dumps(
                r["message_text"], ensure_ascii=False)[1:-1]
            assert needle in texts[r["file"]], r


def test_wrong_facts_really_disagree_with_the_kb() -> None:
    with TRUTH.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] in ("wrong_price", "correct_price")]
    assert rows
    for r in rows:
        kb = int(re.search(r"promo_price=(\d+)", r["detail"]).group(1))  # type: ignore[union-attr]
        said = r["detail"].split("said ", 1)[1]
        digits = re.sub(r"\D", "", said)
        if digits:  # Arabic figure; Chinese-numeral prices are checked through the generator's cn_number
            assert (int(digits) == kb) == (r["kind"] == "correct_price"), r


def test_cn_number() -> None:
    cn = _load_script().cn_number
    assert [cn(n) for n in (299, 1299, 99, 105, 20, 7, 12)] == [
        "两百九十九", "一千两百九十九", "九十九", "一百零五", "二十", "七", "十二"]


def test_shops_validate(rules_dir: Path) -> None:
    shops = load_shops(rules_dir)
    assert sorted(shops) == ["jd_jike", "tmall_yuejia", "tw_meiyan"]
    assert shops["tw_meiyan"].locale == "zh-TW" and shops["tw_meiyan"].currency == "TWD"
    assert all(s.recipients and s.account_prefixes for s in shops.values())
