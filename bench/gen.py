#!/usr/bin/env python3
"""Generate a large synthetic 淘宝 CSV chat export (profile ``taobao_csv``) for benchmarking.

Why a separate generator: the bundled sample logs (scripts/make_sample_logs.py) are ~5k messages,
far too small to measure throughput or memory. This script reuses their dialogue machinery (the same
utterance tables, agent profiles, knowledge-base slot filling, timing model and bad rows) and scales it
to millions of messages: all three shops of rules/shops.yaml in ONE CSV (the 店铺 column carries each
shop's display name so the importer maps it), many agents, one night, Simplified (the two mainland
shops) and Traditional (tw_meiyan) text.

Streaming: conversations are built and written in chunks of ``--chunk`` messages, so memory stays
flat whatever ``--messages`` is. Deterministic: one seeded ``random.Random``, no clock, no set order;
the same arguments give a byte-identical file, whatever ``--chunk`` is.

Exactly ``--messages`` data rows are written (planted bad rows included); every conversation has
6-30 rows. Conversation start times follow the sample logs' hourly load curve over the night, in
file order, never going backwards (the k-th message of N starts a conversation at the quantile k/N of that curve).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import importlib.util
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SCRIPT = REPO / "scripts" / "make_sample_logs.py"

SEED = 20261127
MIN_LEN, MAX_LEN = 6, 30
HEADER = ["店铺", "会话编号", "客服账号", "买家昵称", "发送时间", "发送方", "消息内容", "商品ID", "消息类型", "金额"]
ENCODINGS = {"utf-8-sig": "utf-8-sig", "utf-8": "utf-8", "gb18030": "gb18030"}

# Share of conversations per shop (the Tmall shop is the busiest, the Taiwan shop the smallest).
SHOP_MIX: tuple[tuple[str, float], ...] = (("tmall_yuejia", 0.45), ("jd_jike", 0.35), ("tw_meiyan", 0.20))
PROFILE_MIX: tuple[tuple[str, float], ...] = (("star", 0.25), ("mixed", 0.4), ("mechanical", 0.2), ("rough", 0.15))

# Invented agent names for the extra agents beyond the sample world's nine.
CN_NAMES = ["小雅", "阿宁", "小婷", "晓峰", "小燕", "阿琪", "佳佳", "小鹏", "丹丹", "阿珍", "小乐", "思思", "阿伟",
            "婷婷", "小龙", "悠悠", "阿敏", "晨晨", "小静", "阿浩", "欢欢", "小颖", "阿斌", "甜甜", "小凡", "阿芳",
            "朵朵", "小杰", "阿兰", "笑笑"]
TW_NAMES = ["Iris", "Jason", "Tina", "Eric", "Penny", "Alan", "Wendy", "Ray", "Sandy", "Leo", "Yvonne", "Ben",
            "Coco", "Sam", "Vicky", "Max", "Jenny", "Tom", "Ruby", "Ken"]


def load_sample_module() -> ModuleType:
    """Import scripts/make_sample_logs.py (not a package) so its dialogue tables are the single source."""
    name = "make_sample_logs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SAMPLE_SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@dataclass(frozen=True)
class GenStats:
    """What was written: enough for a benchmark to compute rates without re-reading the file."""

    path: Path
    messages: int
    conversations: int
    agents: int
    bad_rows: int
    per_shop_conversations: dict[str, int]
    seconds: float


def _weighted(rng: random.Random, items: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in items], [w for _, w in items])[0]


def make_agents(rng: random.Random, sm: ModuleType, n_agents: int) -> dict[str, list[tuple[str, str, str]]]:
    """``n_agents`` (account, display name, profile) split over the shops by SHOP_MIX.

    The sample world's nine agents come first (so 阿杰 still works two shops); the rest are invented.
    """
    counts = {s: max(1, round(n_agents * share)) for s, share in SHOP_MIX}
    counts["tmall_yuejia"] += n_agents - sum(counts.values())  # rounding remainder to the biggest shop
    out: dict[str, list[tuple[str, str, str]]] = {}
    for shop_id, _ in SHOP_MIX:
        agents = list(sm.AGENTS[shop_id])[: counts[shop_id]]
        i = 0
        while len(agents) < counts[shop_id]:
            prof = _weighted(rng, PROFILE_MIX)
            if shop_id == "tw_meiyan":
                disp = TW_NAMES[i % len(TW_NAMES)] + ("" if i < len(TW_NAMES) else str(i // len(TW_NAMES) + 1))
                acct = "meiyan_" + disp.lower()
            else:
                disp = CN_NAMES[i % len(CN_NAMES)] + ("" if i < len(CN_NAMES) else str(i // len(CN_NAMES) + 1))
                acct = f"悦家家居旗舰店:{disp}" if shop_id == "tmall_yuejia" else f"jike_kf{i + 1:03d}"
            agents.append((acct, disp, prof))
            i += 1
        out[shop_id] = agents
    return out


def night_curve() -> tuple[list[float], list[tuple[int, int]]]:
    """Cumulative weights and (start_s, end_s) segments of the sample logs' hourly load (09:00-23:15)."""
    weights = [2, 3, 3, 2, 3, 3, 3, 3, 3, 4, 6, 7, 7, 6, 4]  # as make_sample_logs.start_times
    segs = [(h * 3600, h * 3600 + (3600 if h < 23 else 900)) for h in range(9, 24)]
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    return [c / total for c in cum], segs


def start_at(night: date, u: float, cum: list[float], segs: list[tuple[int, int]]) -> datetime:
    """The u-quantile (0..1) of the night's load curve as a shop-local datetime."""
    u = min(max(u, 0.0), 1.0 - 1e-12)
    i = bisect.bisect_right(cum, u)
    lo = cum[i - 1] if i else 0.0
    frac = (u - lo) / (cum[i] - lo)
    a, b = segs[i]
    return datetime(night.year, night.month, night.day) + timedelta(seconds=int(a + frac * (b - a)))


def make_buyer(rng: random.Random, parts: tuple[list[str], list[str], list[str]]) -> str:
    """Nicks from the sample parts plus a number: enough distinct buyers for a million messages."""
    pre, core, suf = parts
    nick = rng.choice(pre) + rng.choice(core) + rng.choice(suf)
    return nick + str(rng.randint(1, 99999)) if rng.random() < 0.8 else nick


def export_id(shop_id: str, night: date, i: int) -> str:
    d = night.strftime("%Y%m%d")
    if shop_id == "tmall_yuejia":
        return f"{d}{i:07d}"
    if shop_id == "jd_jike":
        return f"JD{d}-{i:07d}"
    return f"SPE{night.strftime('%y%m%d')}{i:07d}"


def plant_bad_row(rng: random.Random, sm: ModuleType, conv: Any) -> None:
    """One broken row (empty text / bad time / unknown role) as make_sample_logs.plant_bad_rows does."""
    kind = rng.choice(sm.BAD_KINDS)
    msgs = conv.msgs
    pos = rng.randint(1, len(msgs) - 1)
    prev = msgs[pos - 1]
    texts = {"empty_text": "", "bad_time": prev.text if prev.role == "customer" else "好的",
             "unknown_role": "系统提示：会话已转接"}
    role = "agent" if kind == "unknown_role" else "customer"
    msgs.insert(pos, sm.Msg(role, texts[kind], ts=prev.ts + timedelta(seconds=1), bad=kind))


class ConvFactory:
    """Builds one conversation at a time with the sample logs' Talk/presale/postsale machinery."""

    def __init__(self, sm: ModuleType, rng: random.Random, rules: Path, night: date, n_agents: int,
                 bad_rate: float) -> None:
        self.sm, self.rng, self.night, self.bad_rate = sm, rng, night, bad_rate
        self.world = sm.load_world(rules)
        missing = [s for s, _ in SHOP_MIX if s not in self.world]
        if missing:
            raise SystemExit(f"shops {missing} not in {rules / 'shops.yaml'}")
        self.agents = make_agents(rng, sm, n_agents)
        self.skus = {s: list(w.products) for s, w in self.world.items()}
        self.counter = {s: 0 for s, _ in SHOP_MIX}
        self.names = {s: self.world[s].name for s, _ in SHOP_MIX}
        self.cum, self.segs = night_curve()
        self.last_start = datetime(night.year, night.month, night.day)

    def build(self, shop_id: str, start: datetime) -> Any:
        sm, rng, w = self.sm, self.rng, self.world[shop_id]
        agent = rng.choice(self.agents[shop_id])
        sku = rng.choice(self.skus[shop_id])
        t = sm.Talk(rng, w, agent, self.night, w.products[sku])
        is_post = rng.random() < 0.22
        (sm.postsale if is_post else sm.presale)(t)
        conv = sm.Conv(shop_id, "", agent[0], agent[1], make_buyer(rng, sm.NICK_PARTS[shop_id]), sku, start, t.msgs)
        sm.assign_times(rng, conv)
        if len(conv.msgs) > 1 and rng.random() < self.bad_rate:
            plant_bad_row(rng, sm, conv)
        return conv

    def next_conv(self, u: float, remaining: int) -> tuple[list[list[str]], int]:
        """CSV rows and bad-row count of the next conversation.

        6-30 rows, leaving 0 or >= 6 rows for the rest (so the total is exact). Rows are rendered here,
        not at write time, and starts never go backwards: the bytes do not depend on ``chunk``.
        """
        shop_id = _weighted(self.rng, SHOP_MIX)
        start = start_at(self.night, u, self.cum, self.segs) + timedelta(seconds=self.rng.randint(0, 20))
        start = self.last_start = max(start, self.last_start)
        conv = None
        for _ in range(500):
            conv = self.build(shop_id, start)
            n = len(conv.msgs)
            left = remaining - n
            if MIN_LEN <= n <= MAX_LEN and (left == 0 or left >= MIN_LEN):
                break
        assert conv is not None
        if len(conv.msgs) > remaining:  # only for tiny --messages
            conv.msgs = conv.msgs[:remaining]
        self.counter[shop_id] += 1
        conv.export_id = export_id(shop_id, self.night, self.counter[shop_id])
        rows = list(conv_rows(self.sm, self.rng, self.names[shop_id], conv))
        return rows, sum(1 for m in conv.msgs if m.bad)


def conv_rows(sm: ModuleType, rng: random.Random, shop_name: str, conv: Any) -> Iterator[list[str]]:
    """CSV rows of one conversation, column for column as make_sample_logs.write_taobao_csv."""
    c = conv
    w_profile = "taobao_csv"
    for m in c.msgs:
        kind = {"order": "下单", "payment": "付款", "refund": "退款"}.get(m.event or "", "文本")
        if m.role == "bot":
            kind = "自动回复"
        text = sm.render_event(w_profile, None, m) if m.event else m.text
        role = "访客" if m.bad == "unknown_role" else sm.CSV_ROLE[m.role]
        stamp = sm.bad_time_text(rng, m.ts) if m.bad == "bad_time" else m.ts.strftime("%Y-%m-%d %H:%M:%S")
        amount = f"{m.amount:.2f}" if m.amount is not None else ""
        yield [shop_name, c.export_id, c.agent, c.buyer, stamp, role, text, c.sku, kind, amount]


def generate(out: Path, messages: int = 1_000_000, *, seed: int = SEED, encoding: str = "utf-8-sig",
             agents: int = 60, night: date = date(2026, 11, 25), rules: Path = REPO / "rules",
             bad_rate: float = 0.002, chunk: int = 20_000) -> GenStats:
    """Write ``messages`` CSV data rows to ``out``; stream chunk by chunk; return what was written."""
    if messages < 1:
        raise ValueError("messages must be >= 1")
    if agents < len(SHOP_MIX):
        raise ValueError(f"agents must be >= {len(SHOP_MIX)} (one per shop)")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}")
    t0 = time.perf_counter()
    sm = load_sample_module()
    rng = random.Random(seed)
    fac = ConvFactory(sm, rng, rules, night, agents, bad_rate)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    written = n_conv = n_bad = 0
    with tmp.open("w", encoding=ENCODINGS[encoding], newline="") as fh:
        wr = csv.writer(fh, lineterminator="\r\n")
        wr.writerow(HEADER)
        while written < messages:
            rows: list[list[str]] = []
            while len(rows) < chunk and written + len(rows) < messages:
                conv_rows_, bad = fac.next_conv((written + len(rows)) / messages, messages - written - len(rows))
                rows.extend(conv_rows_)
                n_bad += bad
                n_conv += 1
            wr.writerows(rows)  # one chunk in memory at a time
            written += len(rows)
    tmp.replace(out)
    return GenStats(out, written, n_conv, sum(len(a) for a in fac.agents.values()), n_bad, dict(fac.counter),
                    time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", "-n", type=int, default=1_000_000, help="data rows to write (exact)")
    ap.add_argument("--out", type=Path, default=None, help="output CSV (default bench/data/m<N>.csv)")
    ap.add_argument("--encoding", choices=sorted(ENCODINGS), default="utf-8-sig",
                    help="file encoding; utf-8-sig = UTF-8 with BOM (default), gb18030 as the Tmall backend")
    ap.add_argument("--seed", type=int, default=SEED, help="random seed (same seed, same bytes)")
    ap.add_argument("--agents", type=int, default=60, help="agent accounts over the three shops")
    ap.add_argument("--night", type=date.fromisoformat, default=date(2026, 11, 25),
                    help="shop-local date of the night (YYYY-MM-DD)")
    ap.add_argument("--rules", type=Path, default=REPO / "rules", help="rules folder (shops.yaml, knowledge/)")
    ap.add_argument("--bad-rate", type=float, default=0.002, help="share of conversations with one bad row")
    ap.add_argument("--chunk", type=int, default=20_000, help="messages built and written per chunk")
    args = ap.parse_args(argv)
    out = args.out or REPO / "bench" / "data" / f"m{args.messages}.csv"
    st = generate(out, args.messages, seed=args.seed, encoding=args.encoding, agents=args.agents,
                  night=args.night, rules=args.rules, bad_rate=args.bad_rate, chunk=args.chunk)
    print(f"{st.path}: {st.messages} messages, {st.conversations} conversations, {st.agents} agents, "
          f"{st.bad_rows} bad rows, {st.seconds:.1f} s ({st.messages / st.seconds:,.0f} msg/s)")


if __name__ == "__main__":
    main()
