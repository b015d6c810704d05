"""bench/gen.py writes exactly N realistic taobao_csv rows, deterministically, streaming in chunks.

Small N only (hundreds of rows): the point is the file's contract (header, shop names the importer maps,
6-30 rows per conversation, one night, Traditional text for the Taiwan shop, planted bad rows,
encodings, determinism), not speed.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from types import ModuleType

import opencc
import pytest

from qa_inspect.config import load_shops

REPO = Path(__file__).resolve().parents[2]
GEN = REPO / "bench" / "gen.py"
ROLES = {"客服", "买家", "系统", "机器人"}


def _load_gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gen", GEN)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


gen = _load_gen()


def _rows(path: Path, encoding: str = "utf-8-sig") -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding=encoding, newline="") as fh:
        rd = csv.reader(fh)
        header = next(rd)
        return header, [dict(zip(header, r, strict=True)) for r in rd]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("gen") / "m.csv"
    # chunk smaller than the file so several chunks are written and sorted independently
    st = gen.generate(path, 900, seed=7, chunk=250, bad_rate=0.0)
    return path, st


def test_exact_rows_header_and_bom(small: tuple[Path, object]) -> None:
    path, st = small
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    header, rows = _rows(path)
    assert header == ["店铺", "会话编号", "客服账号", "买家昵称", "发送时间", "发送方", "消息内容", "商品ID", "消息类型", "金额"]
    assert len(rows) == 900 == st.messages
    assert not path.with_name(path.name + ".part").exists()


def test_conversations_contiguous_sized_and_timed(small: tuple[Path, object]) -> None:
    path, st = small
    _, rows = _rows(path)
    keys = [(r["店铺"], r["会话编号"]) for r in rows]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(runs)) == st.conversations  # each conversation's rows are contiguous
    sizes = Counter(keys)
    assert all(6 <= n <= 30 for n in sizes.values()), sorted(sizes.values())
    by_conv: dict[tuple[str, str], list[datetime]] = {}
    for r in rows:
        by_conv.setdefault((r["店铺"], r["会话编号"]), []).append(datetime.fromisoformat(r["发送时间"]))
    for ts in by_conv.values():
        assert ts == sorted(ts)
        assert ts[0].date() == date(2026, 11, 25) and ts[0].hour >= 9
    starts = [ts[0] for ts in by_conv.values()]  # dicts keep file order
    assert starts == sorted(starts)  # the file is in start order across chunks
    assert (max(starts) - min(starts)).total_seconds() > 8 * 3600  # spread over the night, not bunched


def test_shops_roles_agents_and_text(small: tuple[Path, object]) -> None:
    path, _ = small
    _, rows = _rows(path)
    shops = load_shops(REPO / "rules")
    name_to_id = {s.name: sid for sid, s in shops.items()}
    assert {r["店铺"] for r in rows} == set(name_to_id)
    assert {r["发送方"] for r in rows} <= ROLES
    assert all(r["消息内容"] for r in rows)
    for r in rows:
        if r["发送方"] == "系统":
            assert r["消息类型"] in {"下单", "付款", "退款"} and float(r["金额"]) > 0
        if r["发送方"] == "机器人":
            assert r["消息类型"] == "自动回复"
        if name_to_id[r["店铺"]] == "tmall_yuejia":
            assert r["客服账号"].startswith("悦家家居旗舰店:")
    t2s = opencc.OpenCC("t2s")
    trad = Counter()
    total = Counter()
    for r in rows:
        shop = name_to_id[r["店铺"]]
        total[shop] += 1
        trad[shop] += t2s.convert(r["消息内容"]) != r["消息内容"]
    assert trad["tw_meiyan"] / total["tw_meiyan"] > 0.4  # Traditional text for the Taiwan shop
    assert trad["tmall_yuejia"] + trad["jd_jike"] <= 0.02 * (total["tmall_yuejia"] + total["jd_jike"])


def test_agents_split_over_shops() -> None:
    import random

    sm = gen.load_sample_module()
    agents = gen.make_agents(random.Random(1), sm, 60)
    accounts = [a[0] for lst in agents.values() for a in lst]
    assert len(accounts) == len(set(accounts)) == 60
    assert set(agents) == {"tmall_yuejia", "jd_jike", "tw_meiyan"}
    assert len(agents["tmall_yuejia"]) > len(agents["jd_jike"]) > len(agents["tw_meiyan"]) >= 3
    assert all(a[2] in sm.PROFILES for lst in agents.values() for a in lst)


def test_deterministic_and_seed_sensitive(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    gen.generate(a, 400, seed=3, bad_rate=0.3)
    gen.generate(b, 400, seed=3, bad_rate=0.3, chunk=40)  # chunking changes only how it is written, not what
    gen.generate(c, 400, seed=4, bad_rate=0.3)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_gb18030_same_content(tmp_path: Path) -> None:
    u, g = tmp_path / "u.csv", tmp_path / "g.csv"
    gen.generate(u, 200, seed=5, encoding="utf-8-sig")
    gen.generate(g, 200, seed=5, encoding="gb18030")
    raw = g.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert raw.decode("gb18030") == u.read_bytes().decode("utf-8-sig")


def test_bad_rows_planted(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    st = gen.generate(path, 600, seed=11, bad_rate=0.5)
    _, rows = _rows(path)
    assert len(rows) == 600
    empty = sum(1 for r in rows if not r["消息内容"])
    unknown = sum(1 for r in rows if r["发送方"] not in ROLES)
    bad_time = 0
    for r in rows:
        try:
            datetime.strptime(r["发送时间"], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            bad_time += 1
    assert empty + unknown + bad_time == st.bad_rows > 0
    assert min(empty, bad_time) > 0


@pytest.mark.parametrize("n", [1, 5, 6, 31, 37])
def test_tiny_totals_exact(tmp_path: Path, n: int) -> None:
    path = tmp_path / f"n{n}.csv"
    gen.generate(path, n, seed=2)
    _, rows = _rows(path)
    assert len(rows) == n
    if n >= 6:  # above the minimum conversation size every conversation still has 6-30 rows
        assert all(6 <= k <= 30 for k in Counter(r["会话编号"] for r in rows).values())


def test_start_curve_monotone_over_the_night() -> None:
    cum, segs = gen.night_curve()
    night = date(2026, 11, 25)
    ts = [gen.start_at(night, u / 100, cum, segs) for u in range(101)]
    assert ts == sorted(ts)
    assert ts[0] == datetime(2026, 11, 25, 9, 0)
    assert datetime(2026, 11, 25, 23, 0) < ts[-1] <= datetime(2026, 11, 25, 23, 15)
    # evening is busier than the morning (the sample logs' load curve): more than half after 18:00
    assert sum(t.hour >= 18 for t in ts) > 50


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        gen.generate(tmp_path / "x.csv", 0)
    with pytest.raises(ValueError):
        gen.generate(tmp_path / "x.csv", 10, encoding="latin-1")
    with pytest.raises(ValueError):
        gen.generate(tmp_path / "x.csv", 10, agents=2)
    assert not (tmp_path / "x.csv").exists()
