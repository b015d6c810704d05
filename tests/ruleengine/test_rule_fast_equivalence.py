"""The partition-wide rule engine (``run_rules``: phrase masks, per-type ``plan``s, vectorised
clocks and delays, column-wise findings) against a straightforward reference: every rule's
``_preconditions`` and ``evaluate`` on every conversation, one dict record per hit. Both must
give the same frame — same rows, same order, same dtypes — on real-looking and edge-case data.
"""

from __future__ import annotations

import pickle
import random
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from qa_inspect import schema
from qa_inspect.config import BusinessHours, Shop, load_shops
from qa_inspect.ingest import ingest_paths
from qa_inspect.ruleengine import RuleSet, apply_all_rules, apply_rules, apply_template_rules, template_counts
from qa_inspect.ruleengine.conversation import iter_conversations, split_conversations
from qa_inspect.ruleengine.engine import Env, _preconditions, _record, run_rules
from qa_inspect.ruleengine.matching import _inner_bounds
from qa_inspect.ruleengine.types import (
    BATCH_TYPES,
    TimingRule,
    clock_start,
    partition_clocks,
    partition_delays,
)
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, tokenize


def reference_run_rules(partition: pd.DataFrame, rules: list, env: Env) -> pd.DataFrame:
    """The plain definition: conversations in order, rules in order, hits in order."""
    records = []
    for conv in iter_conversations(partition):
        for rule in rules:
            if _preconditions(rule, conv, env):
                records.extend(_record(rule, conv, h) for h in rule.evaluate(conv, env))
    return schema.findings_frame(records)


def assert_same(part: pd.DataFrame, ruleset: RuleSet, shops: dict[str, Shop],
                counts: Counter[str] | None = None) -> int:
    """Fast == reference for the per-conversation rules and the template rules; returns rows."""
    rows = 0
    for batch in (False, True):
        rules = [r for r in ruleset.rules if (r.type in BATCH_TYPES) == batch]
        c = counts if batch else None
        fast = run_rules(part, rules, Env(ruleset, shops, c))
        ref = reference_run_rules(part, rules, Env(ruleset, shops, c))
        pd.testing.assert_frame_equal(fast, ref, check_exact=True)
        rows += len(fast)
    return rows


@pytest.fixture(scope="module")
def sample(sample_logs_dir: Path, rules_dir: Path, rule_tokenizer: Tokenizer) -> pd.DataFrame:
    msgs = ingest_paths([sample_logs_dir], rules_dir=rules_dir).messages
    return tokenize(normalize(msgs), rule_tokenizer)


def test_sample_logs_same_as_reference(sample: pd.DataFrame, default_ruleset: RuleSet, rules_dir: Path) -> None:
    shops = load_shops(rules_dir)
    # counts x30 so template rules fire on the small sample too
    counts = Counter({k: v * 30 for k, v in template_counts(sample).items()})
    assert assert_same(sample, default_ruleset, shops, counts) > 500


def test_shuffled_rows_and_missing_values_same_as_reference(sample: pd.DataFrame, default_ruleset: RuleSet,
                                                             rules_dir: Path) -> None:
    """Unsorted input (the engine sorts), missing timestamps, texts, agents and events."""
    shops = load_shops(rules_dir)
    ids = sorted(sample[schema.CONVERSATION_ID].unique())[:150]
    part = sample[sample[schema.CONVERSATION_ID].isin(ids)].sample(frac=1.0, random_state=7).reset_index(drop=True)
    rng = np.random.default_rng(3)
    n = len(part)
    part.loc[rng.random(n) < 0.15, schema.TS] = pd.NaT
    part.loc[rng.random(n) < 0.05, schema.AGENT_ID] = pd.NA
    part.loc[rng.random(n) < 0.03, [schema.TEXT, schema.NORM_TEXT]] = pd.NA
    part.loc[rng.random(n) < 0.05, schema.EVENT] = "order"
    counts = Counter({k: v * 40 for k, v in template_counts(part).items()})
    assert assert_same(part, default_ruleset, shops, counts) > 100


def test_odd_shop_clocks_same_as_reference(sample: pd.DataFrame, default_ruleset: RuleSet) -> None:
    """Business hours across midnight, a DST time zone, unknown shops (platform default)."""
    first = sorted(sample[schema.SHOP_ID].dropna().unique())[0]
    shops = {first: Shop(shop_id=first, name="x", platform="tmall", timezone="America/New_York",
                         business_hours=BusinessHours(start="22:00", end="06:00"))}
    part = sample.copy()
    # shift a few chats onto DST change days and into the night
    part[schema.TS] = part[schema.TS] + pd.to_timedelta(
        (part[schema.CONVERSATION_ID].astype(str).str.len() % 7) * 5, unit="h")
    assert assert_same(part, default_ruleset, shops) > 100


def test_empty_and_tiny_partitions(sample: pd.DataFrame, default_ruleset: RuleSet, rules_dir: Path) -> None:
    shops = load_shops(rules_dir)
    assert assert_same(sample.iloc[:0], default_ruleset, shops, Counter()) == 0
    one = sample[sample[schema.CONVERSATION_ID] == sample[schema.CONVERSATION_ID].iloc[0]]
    assert_same(one.iloc[:1], default_ruleset, shops, Counter({"x": 1}))
    assert_same(one, default_ruleset, shops, Counter(template_counts(one)))


def test_partition_clocks_equal_scalar_clock_start() -> None:
    rng = random.Random(5)
    for tz_name, start, end in [("Asia/Shanghai", "09:00", "24:00"), ("Europe/Berlin", "08:30", "17:45"),
                                ("America/New_York", "22:00", "06:00"), ("Asia/Taipei", "00:00", "24:00")]:
        tz, hours = ZoneInfo(tz_name), BusinessHours(start=start, end=end)
        base = pd.Timestamp("2026-03-07", tz="UTC").value
        rows = []
        for k in range(400):  # around the spring DST change in Europe and the US
            ts = base + rng.randrange(0, 10 * 86_400) * 1_000_000_000
            rows.append({schema.CONVERSATION_ID: f"c{k // 4}", schema.SEQ: k % 4, schema.SHOP_ID: "s",
                         schema.PLATFORM: "tmall", schema.ROLE: "customer", schema.TEXT: "x", schema.NORM_TEXT: "x",
                         schema.TOKENS: ["x"], schema.TS: pd.Timestamp(ts, tz="UTC"), schema.IS_AUTO_REPLY: False,
                         schema.EVENT: None, schema.AGENT_ID: None})
        split = split_conversations(pd.DataFrame(rows))
        partition_clocks(split, {"s": Shop(shop_id="s", name="s", platform="tmall", timezone=tz_name,
                                           business_hours=hours)})
        got = split.extra["clock_ns"]
        want = [clock_start(pd.Timestamp(t, tz="UTC"), tz, hours).value for t in split.cols["ts"]]
        assert got == want, tz_name


def test_partition_delays_equal_per_conversation_delays(sample: pd.DataFrame, default_ruleset: RuleSet,
                                                         rules_dir: Path) -> None:
    shops = load_shops(rules_dir)
    timing = [r for r in default_ruleset.rules if isinstance(r, TimingRule)]
    assert timing
    split = split_conversations(sample)
    partition_clocks(split, shops)
    for bho in (True, False):
        rule = timing[0].model_copy(update={"business_hours_only": bho})
        whole = partition_delays(split, shops, bho)
        env = Env(default_ruleset, shops)
        singles = [rule._delays(conv, env) for conv in iter_conversations(sample)]
        assert list(whole) == singles
        assert sum(map(len, whole)) > 100


def test_inner_bounds_equal_brute_force() -> None:
    rng = random.Random(11)
    for _ in range(300):
        text_len = rng.randrange(1, 30)
        tokens, pos = [], 0
        while pos < text_len:
            k = rng.randrange(1, 5)
            tokens.append("x" * min(k, text_len - pos))
            pos += len(tokens[-1])
        starts, p = [], 0
        for t in tokens:
            starts.append(p)
            p += len(t)
        found: dict[str, list[tuple[int, int]]] = {}
        for j in range(rng.randrange(0, 8)):
            s = rng.randrange(0, text_len)
            e = rng.randrange(s + 1, text_len + 1)
            found.setdefault(f"p{j % 3}", []).append((s, e))
        index = {s: i for i, s in enumerate(starts)}
        whole = [(s, e) for spans in found.values() for s, e in spans
                 if s in index and len(tokens[index[s]]) == e - s]
        want = {x for spans in found.values() for s, e in spans
                if any(ws <= s and e <= we for ws, we in whole) for x in (s, e)}
        assert _inner_bounds(found, tokens, starts) == want


def test_ruleset_still_pickles_after_a_run(sample: pd.DataFrame, default_ruleset: RuleSet) -> None:
    """Nothing compiled for a call sticks to the rule set (it goes to the process pool)."""
    before = pickle.dumps(default_ruleset)
    run_rules(sample.iloc[:300], default_ruleset.rules, Env(default_ruleset, {}))
    assert pickle.dumps(default_ruleset) == before


def test_reference_would_catch_a_wrong_order(sample: pd.DataFrame, default_ruleset: RuleSet) -> None:
    """The comparison is strict: the same rows in another order do not pass."""
    fast = run_rules(sample, default_ruleset.rules, Env(default_ruleset, {}))
    assert len(fast) > 10
    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(fast, fast.iloc[::-1].reset_index(drop=True))



# --- round 2: one pass for both rule groups, split-wide message/template rules, array delays ---

def test_all_rules_in_one_pass_equal_the_two_calls(sample: pd.DataFrame, default_ruleset: RuleSet,
                                                   rules_dir: Path) -> None:
    """``apply_all_rules`` shares one Split between the per-conversation and template rules:
    the frames are exactly those of ``apply_rules`` and ``apply_template_rules``."""
    shops = load_shops(rules_dir)
    ids = sorted(sample[schema.CONVERSATION_ID].unique())[:200]
    part = sample[sample[schema.CONVERSATION_ID].isin(ids)].sample(frac=1.0, random_state=2).reset_index(drop=True)
    part.loc[np.random.default_rng(4).random(len(part)) < 0.05, schema.AGENT_ID] = pd.NA
    counts = Counter({k: v * 30 for k, v in template_counts(part).items()})
    found, templ = apply_all_rules(part, default_ruleset, counts, shops)
    pd.testing.assert_frame_equal(found, apply_rules(part, default_ruleset, shops), check_exact=True)
    pd.testing.assert_frame_equal(templ, apply_template_rules(part, default_ruleset, counts, shops), check_exact=True)
    assert len(found) > 50 and len(templ) > 5
    empty = apply_all_rules(part.iloc[:0], default_ruleset, counts, shops)
    assert all(f.empty and list(f.columns) == list(schema.FINDING_COLUMNS) for f in empty)


def _variants(ruleset: RuleSet) -> RuleSet:
    """Message and template rules under every scope the split-wide paths handle differently."""
    rules = []
    phrase = next(r for r in ruleset.rules if r.type == "phrase")
    regex = next(r for r in ruleset.rules if r.type == "regex")
    k = 0
    for base in (phrase, regex):
        for role in ("agent", "customer"):
            for position, window in (("any", 1), ("first", 1), ("first", 3), ("last", 1), ("last", 2)):
                for match in ("present", "absent"):
                    k += 1
                    rules.append(base.model_copy(update={
                        "id": f"V-{k:03d}", "match": match,
                        "applies_to": base.applies_to.model_copy(
                            update={"role": role, "position": position, "window": window})}))
    templ = next(r for r in ruleset.rules if r.type == "template")
    for mode in ("message", "conversation"):
        for scope in ("shop", "batch"):
            for share, need, least in ((0.8, 3, 20), (0.3, 1, 5), (1.0, 2, 2)):
                k += 1
                rules.append(templ.model_copy(update={
                    "id": f"V-{k:03d}", "mode": mode, "scope": scope, "min_share": share,
                    "min_messages": need, "min_conversations": least}))
    return RuleSet(rules, "variants")


def test_rule_variants_same_as_reference(sample: pd.DataFrame, default_ruleset: RuleSet, rules_dir: Path) -> None:
    """Present/absent at first/last/any windows for both roles, template modes and scopes, with
    missing agents (several agents per chat, None among them) and texts."""
    shops = load_shops(rules_dir)
    variants = _variants(default_ruleset)
    ids = sorted(sample[schema.CONVERSATION_ID].unique())[:250]
    part = sample[sample[schema.CONVERSATION_ID].isin(ids)].reset_index(drop=True)
    rng = np.random.default_rng(9)
    part.loc[rng.random(len(part)) < 0.1, schema.AGENT_ID] = pd.NA
    part.loc[rng.random(len(part)) < 0.1, schema.AGENT_ID] = "other-agent"
    part.loc[rng.random(len(part)) < 0.02, [schema.TEXT, schema.NORM_TEXT]] = pd.NA
    counts = Counter({k: v * 25 for k, v in template_counts(part).items()})
    fast = run_rules(part, variants.rules, Env(variants, shops, counts))
    ref = reference_run_rules(part, variants.rules, Env(variants, shops, counts))
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    fired = set(fast[schema.RULE_ID])
    assert len(fired) > len(variants.rules) // 2  # most variants fire somewhere: the test has teeth


def test_partition_delays_far_apart_dates_as_python_integers(default_ruleset: RuleSet) -> None:
    """Delays spanning centuries overflow int64 nanoseconds: they are computed exactly anyway."""
    timing = next(r for r in default_ruleset.rules if isinstance(r, TimingRule))
    rows = []
    for k, (t0, t1) in enumerate([("1680-01-01", "2260-01-01"), ("2026-01-01 10:00", "2026-01-01 10:03"),
                                  ("2260-01-01", "1680-01-01")]):
        for seq, (role, ts) in enumerate((("customer", t0), ("agent", t1))):
            rows.append({schema.CONVERSATION_ID: f"c{k}", schema.SEQ: seq, schema.SHOP_ID: "s",
                         schema.PLATFORM: "tmall", schema.ROLE: role, schema.TEXT: "x", schema.NORM_TEXT: "x",
                         schema.TOKENS: ["x"], schema.TS: pd.Timestamp(ts, tz="UTC"), schema.IS_AUTO_REPLY: False,
                         schema.EVENT: None, schema.AGENT_ID: "a" if role == "agent" else None})
    part = pd.DataFrame(rows)
    split = split_conversations(part)
    env = Env(RuleSet([], "x"), {})
    for bho in (False, True):
        rule = timing.model_copy(update={"business_hours_only": bho})
        got = list(partition_delays(split, {}, bho))
        want = [rule._delays(conv, env) for conv in iter_conversations(part)]
        assert got == want
        assert got[0][0][1] > 1.8e10 and got[2][0][1] == 0.0
