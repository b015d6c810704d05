"""Evidence on real data: run the default rules over the JDDC sample and print hit rates.

Usage: python scripts/eval_rules_real.py [--data ../shared/data] [--seed 7] [--n 30]
           [--dimension attitude]

Reads ``jddc/chat_sample.tsv`` (JD.com chats, no timestamps: timing rules are N/A) through the
jddc importer when qa_inspect.ingest provides it, else parses the TSV here. Prints the per-rule
hit table and ``--n`` random (seeded) hits of the chosen dimension with their context, for a
human to judge. Nothing from the data is written anywhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from qa_inspect import schema
from qa_inspect.config import default_rules_dir, load_shops
from qa_inspect.ruleengine import load_ruleset
from qa_inspect.ruleengine.stats import rule_stats
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, tokenize

REPO = Path(__file__).resolve().parents[1]


def parse_jddc_tsv(path: Path) -> pd.DataFrame:
    """session_id, user_id, waiter_send (0 buyer / 1 agent), is_transfer, is_repeat, sku, content."""
    raw = pd.read_csv(path, sep="\t", header=None, quoting=3, dtype=str, keep_default_na=False,
                      names=["session_id", "user_id", "waiter_send", "is_transfer", "is_repeat", "sku", "content"])
    df = pd.DataFrame({
        schema.PLATFORM: "jd",
        schema.SHOP_ID: "jddc",
        schema.CONVERSATION_ID: "jddc:" + raw["session_id"],
        schema.SEQ: raw.groupby("session_id").cumcount(),
        schema.TS: pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]"),
        schema.ROLE: raw["waiter_send"].map({"0": "customer", "1": "agent"}).fillna("system"),
        schema.AGENT_ID: "jddc-agent",
        schema.CUSTOMER_ID: raw["user_id"],
        schema.TEXT: raw["content"],
        schema.SKU: raw["sku"].where(raw["sku"] != "nan"),
        schema.IS_AUTO_REPLY: False,
        schema.EVENT: None,
        schema.AMOUNT: float("nan"),
        schema.SOURCE_FILE: str(path),
        schema.SOURCE_LINE: raw.index + 1,
    })
    return df


def load_jddc(path: Path, rules_dir: Path) -> tuple[pd.DataFrame, str]:
    try:
        from qa_inspect.ingest import ingest_paths

        res = ingest_paths([path], rules_dir=rules_dir, fmt="jddc")
        if len(res.messages):
            return res.messages, "qa_inspect.ingest (jddc)"
    except Exception as exc:  # noqa: BLE001 - the importer is optional here
        print(f"(jddc importer unavailable: {type(exc).__name__}: {exc}; parsing the TSV here)", file=sys.stderr)
    return parse_jddc_tsv(path), "script TSV parser"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--rules", type=Path, default=default_rules_dir())
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--dimension", default="attitude")
    ap.add_argument("--rule", default=None, help="sample hits of this rule id only")
    args = ap.parse_args(argv)

    path = args.data / "jddc" / "chat_sample.tsv"
    messages, how = load_jddc(path, args.rules)
    ruleset = load_ruleset(args.rules)
    t0 = time.perf_counter()
    tok = Tokenizer.from_rules(args.rules)  # dict/*.txt + rule phrases
    part = tokenize(normalize(messages), tok)
    t1 = time.perf_counter()
    stats, findings = rule_stats(part, ruleset, load_shops(args.rules), return_findings=True)
    t2 = time.perf_counter()
    n_conv = part[schema.CONVERSATION_ID].nunique()
    print(f"data: {path} via {how}: {len(part)} messages, {n_conv} conversations; rule set {ruleset.version}")
    print(f"normalize+tokenize {t1 - t0:.1f}s, rules {t2 - t1:.1f}s ({len(part) / max(t2 - t1, 1e-9):.0f} msg/s)")
    cols = ["rule_id", "name", "type", "polarity", "hits", "conversations", "coverage", "conflicts"]
    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(stats[cols].to_string(index=False))

    sel = findings[findings[schema.DIMENSION] == args.dimension]
    if args.rule:
        sel = findings[findings[schema.RULE_ID] == args.rule]
    sample = sel.sample(n=min(args.n, len(sel)), random_state=args.seed) if len(sel) else sel
    by_key = part.set_index([schema.CONVERSATION_ID, schema.SEQ])
    print(f"\n{len(sample)} random {args.rule or args.dimension} hits (seed {args.seed}) of {len(sel)}:")
    for k, (_, f) in enumerate(sample.iterrows(), start=1):
        cid, idx = f[schema.CONVERSATION_ID], int(f[schema.MESSAGE_INDEX])
        print(f"\n[{k}] {f[schema.RULE_ID]} {cid[-8:]}#{idx}: {f[schema.EXPLANATION]}")
        if idx < 0:
            continue
        for j in range(max(0, idx - 2), idx + 1):
            if (cid, j) in by_key.index:
                row = by_key.loc[(cid, j)]
                mark = ">>" if j == idx else "  "
                print(f"   {mark} {row[schema.ROLE][:4]}: {str(row[schema.TEXT])[:160]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
