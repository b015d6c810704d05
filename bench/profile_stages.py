"""Time and profile the per-message stages (normalize, tokenize, rules, knowledge) separately.

The input replicates the ingested sample logs with new conversation ids up to N messages, in two
variants: ``same`` (text repeats exactly as in real batches, so per-text caches help) and
``perturbed`` (every message gets a small random change: other numbers, another product of the
shop, an order id or a particle appended; caching by identical text then barely helps). Stages
run per partition of whole conversations, as the pipeline calls them.

    /work/venv/bin/python bench/profile_stages.py --messages 100000 [--variant same|perturbed|both]
        [--profile STAGE ...] [--top 25] [--partition-size 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from qa_inspect import schema  # noqa: E402
from qa_inspect.config import load_shops  # noqa: E402
from qa_inspect.ingest import ingest_paths  # noqa: E402
from qa_inspect.knowledge import catalog_words, load_knowledge, verify_knowledge  # noqa: E402
from qa_inspect.ruleengine import (  # noqa: E402
    apply_rules,
    apply_template_rules,
    load_ruleset,
    merge_template_counts,
    template_counts,
)
from qa_inspect.text.normalize import normalize  # noqa: E402
from qa_inspect.text.tokenize import Tokenizer, tokenize  # noqa: E402

SORT = ["cumulative"]
STAGES = ("normalize", "tokenize", "rules", "templates", "knowledge")
_NUM = re.compile(r"\d+")
_SUFFIXES = ("", "哦", "~", "呢", "亲", "。", "!", "呀", " 谢谢", "[微笑]")


def base_messages(rules_dir: Path, logs: Path) -> pd.DataFrame:
    return ingest_paths([str(logs)], rules_dir=rules_dir).messages


def _perturb(text: str, rng: random.Random, names: list[str]) -> str:
    """Other numbers, maybe another product name of the shop, maybe a suffix or an order id."""
    t = _NUM.sub(lambda m: str(rng.randint(1, 10 ** min(len(m.group(0)), 6) - 1)), text)
    for n in names:
        if n in t and rng.random() < 0.5:
            t = t.replace(n, rng.choice(names), 1)
            break
    r = rng.random()
    if r < 0.15:
        t += f" 订单号{rng.randint(10 ** 11, 10 ** 12 - 1)}"
    else:
        t += rng.choice(_SUFFIXES) + ("" if r < 0.5 else str(rng.randint(1, 99)))
    return t


def build_input(base: pd.DataFrame, n: int, variant: str, names: dict[str, list[str]],
                seed: int = 7) -> pd.DataFrame:
    """``n`` messages of whole conversations: copies of ``base`` with new conversation ids."""
    rng = random.Random(seed)
    base = base.sort_values([schema.CONVERSATION_ID, schema.SEQ], kind="stable").reset_index(drop=True)
    copies, total, k = [], 0, 0
    while total < n:
        c = base.copy()
        c[schema.CONVERSATION_ID] = c[schema.CONVERSATION_ID].astype(str) + f"#{k}"
        if variant == "perturbed":
            texts = c[schema.TEXT].astype("object").tolist()
            shop = c[schema.SHOP_ID].astype("object").tolist()
            c[schema.TEXT] = pd.Series([t if not isinstance(t, str) else _perturb(t, rng, names.get(s, []))
                                        for t, s in zip(texts, shop, strict=True)], index=c.index, dtype="string")
        copies.append(c)
        total += len(c)
        k += 1
    df = pd.concat(copies, ignore_index=True)
    # cut at a conversation boundary at or after n rows
    cid = df[schema.CONVERSATION_ID].to_numpy()
    cut = n
    while cut < len(df) and cid[cut] == cid[cut - 1]:
        cut += 1
    return df.iloc[:cut].reset_index(drop=True)


def partitions(df: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    ids = pd.unique(df[schema.CONVERSATION_ID])
    rank = pd.Series(range(len(ids)), index=ids)
    part = df[schema.CONVERSATION_ID].map(rank) // size
    return [g.reset_index(drop=True) for _, g in df.groupby(part, sort=True)]


def timed(fn: Callable[[], Any], profile: bool, top: int, label: str) -> tuple[Any, float, float, str]:
    """Result, wall seconds, CPU seconds of this process (robust on a shared machine), profile."""
    prof = cProfile.Profile() if profile else None
    t0, c0 = time.perf_counter(), time.process_time()
    if prof is not None:
        prof.enable()
    out = fn()
    if prof is not None:
        prof.disable()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    report = ""
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats(*SORT).print_stats(top)
        report = f"--- cProfile {label} (top {top} by cumtime) ---\n" + s.getvalue()
    return out, dt, cpu, report


def run_variant(base: pd.DataFrame, args: argparse.Namespace, ctx: dict[str, Any], variant: str) -> dict[str, Any]:
    df = build_input(base, args.messages, variant, ctx["names"])
    parts = partitions(df, args.partition_size)
    n = len(df)
    res: dict[str, Any] = {"variant": variant, "messages": n, "partitions": len(parts),
                           "unique_texts": int(df[schema.TEXT].nunique()), "loadavg_before": os.getloadavg()}
    prof = set(args.profile or [])
    reports: list[str] = []

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        out, dt, cpu, rep = timed(fn, name in prof, args.top, f"{variant}/{name}")
        res[name] = {"seconds": round(dt, 3), "cpu_seconds": round(cpu, 3),
                     "msgs_per_s": round(n / dt) if dt else None,
                     "msgs_per_cpu_s": round(n / cpu) if cpu else None}
        if rep:
            reports.append(rep)
        return out

    parts = stage("normalize", lambda: [normalize(p) for p in parts])
    parts = stage("tokenize", lambda: [tokenize(p, ctx["tokenizer"]) for p in parts])
    counts = merge_template_counts(template_counts(p) for p in parts)
    rf = stage("rules", lambda: [apply_rules(p, ctx["ruleset"], ctx["shops"]) for p in parts])
    tf = stage("templates", lambda: [apply_template_rules(p, ctx["ruleset"], counts, ctx["shops"]) for p in parts])
    kf = stage("knowledge", lambda: [verify_knowledge(p, ctx["kbs"]) for p in parts])
    res["findings"] = {"rules": sum(len(f) for f in rf), "templates": sum(len(f) for f in tf),
                       "knowledge": sum(len(f) for f in kf)}
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        for name, fs in (("rules", rf), ("templates", tf), ("knowledge", kf)):
            pd.concat(fs, ignore_index=True).to_pickle(args.dump / f"{variant}-{name}.pkl")
        pd.concat([p[[schema.NORM_TEXT, schema.TOKENS]] for p in parts], ignore_index=True).to_pickle(
            args.dump / f"{variant}-text.pkl")
    res["loadavg_after"] = os.getloadavg()
    res["profiles"] = reports
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000, help="messages per variant (default 100k)")
    ap.add_argument("--variant", choices=("same", "perturbed", "both"), default="both",
                    help="exact copies, randomly perturbed copies, or both")
    ap.add_argument("--profile", nargs="*", choices=STAGES, default=[],
                    help="stages to run under cProfile (slower; timings of those stages include overhead)")
    ap.add_argument("--top", type=int, default=25, help="cProfile rows to print")
    ap.add_argument("--sort", default="cumulative", help="cProfile sort key (cumulative, tottime, ...)")
    ap.add_argument("--partition-size", type=int, default=2000, help="conversations per partition")
    ap.add_argument("--rules", type=Path, default=ROOT / "rules", help="rules folder")
    ap.add_argument("--logs", type=Path, default=ROOT / "sample_logs", help="sample logs to replicate")
    ap.add_argument("--backend", choices=("jieba", "rjieba"), default=None, help="tokenizer backend")
    ap.add_argument("--dump", type=Path, default=None,
                    help="write findings and norm_text/tokens here (pickles) to compare outputs across changes")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    SORT[:] = [args.sort]

    kbs = load_knowledge(args.rules)
    names = {sid: sorted({w for p in kb.products.values() for w in [p.name, *p.aliases] if len(w) >= 2})
             for sid, kb in kbs.items()}
    ctx = {"kbs": kbs, "names": names, "ruleset": load_ruleset(args.rules), "shops": load_shops(args.rules),
           "tokenizer": Tokenizer.from_rules(args.rules, extra_words=catalog_words(kbs), backend=args.backend)}
    ctx["tokenizer"].lcut("预热")  # load the dictionary outside the timings
    base = base_messages(args.rules, args.logs)
    variants = ("same", "perturbed") if args.variant == "both" else (args.variant,)
    results = []
    for v in variants:
        r = run_variant(base, args, ctx, v)
        results.append(r)
        for rep in r["profiles"]:
            print(rep)
        print(f"== {v}: {r['messages']} messages, {r['unique_texts']} unique texts, {r['partitions']} partitions, "
              f"load {r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}")
        total = cpu = 0.0
        for s in STAGES:
            total += r[s]["seconds"]
            cpu += r[s]["cpu_seconds"]
            print(f"   {s:<10} {r[s]['seconds']:>8.2f} s wall {r[s]['msgs_per_s']:>9,} msgs/s | "
                  f"{r[s]['cpu_seconds']:>7.2f} s cpu {r[s]['msgs_per_cpu_s']:>9,} msgs/cpu-s")
        print(f"   {'total':<10} {total:>8.2f} s wall {round(r['messages'] / total):>9,} msgs/s | "
              f"{cpu:>7.2f} s cpu {round(r['messages'] / cpu):>9,} msgs/cpu-s   findings {r['findings']}")
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "profiles"} for r in results],
                                        ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
