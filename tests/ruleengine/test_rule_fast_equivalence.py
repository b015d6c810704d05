"""The partition-wide rule engine (``run_rules``: phrase masks, per-type ``plan``s, vectorised
clocks and delays, column-wise findings) against a straightforward reference: every rule's
``_preconditions`` and ``evaluate`` on every conversation, one dict record per hit. Both must
give the same frame — same rows, same order, same dtypes — on real-looking and edge-case data.
"""

from __future__ import annotations

import pickle
import random
import re
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
from qa_inspect.ruleengine.matching import _inner_bounds, phrases_found, phrases_found_many
from qa_inspect.ruleengine.types import (
    _CLAUSE_RE,
    BATCH_TYPES,
    PartialAnswerRule,
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


# --- round 3: split-wide timing/unanswered/partial-answer rules, batched phrase pass, prefilters ---

def _round3_variants(ruleset: RuleSet, top_count: int) -> RuleSet:
    """The rule types that got a split-wide ``evaluate_split`` or a new prefilter in round 3,
    under the settings their paths handle differently."""
    rules = []
    k = 0

    def add(base, **update) -> None:
        nonlocal k
        k += 1
        rules.append(base.model_copy(update={"id": f"R3-{k:03d}", **update}))

    timing = next(r for r in ruleset.rules if isinstance(r, TimingRule))
    for metric in ("first_response", "reply_delay", "slow_reply_count"):
        for fire_when in ("over", "within"):
            for bho in (True, False):
                for threshold in (60.0, {"default": 120.0, "jd": 0.0}, {"jd": 30.0, "tmall": 300.0}):
                    add(timing, metric=metric, fire_when=fire_when, business_hours_only=bho,
                        threshold_s=threshold, max_count=1 if metric == "slow_reply_count" else 0)
    unanswered = next(r for r in ruleset.rules if r.type == "unanswered")
    for bots in (False, True):
        add(unanswered, count_bot_replies=bots)
    partial = next(r for r in ruleset.rules if r.type == "partial_answer")
    for need, replies in ((2, 5), (2, 1), (3, 2)):
        add(partial, min_questions=need, max_replies=replies)
    regex = next(r for r in ruleset.rules if r.type == "regex")
    phrases = sorted({p for r in ruleset.rules if r.type == "phrase" for p in r.phrases})
    for role in ("agent", "customer"):  # phrases and patterns in one matcher: the prefilter keeps phrase texts
        for patterns in (list(regex.patterns), ["zq{3}x"]):  # (the second never matches: phrase hits only)
            for match in ("present", "absent"):
                add(regex, phrases=phrases, patterns=patterns, match=match, when=type(regex.when)(),
                    applies_to=regex.applies_to.model_copy(update={"role": role}))
    templ = next(r for r in ruleset.rules if r.type == "template")
    for chars, least, excl in ((1, 2, []), (30, 2, list(templ.exclude_phrases)), (8, 10 ** 6, []),
                               (1, top_count, [])):  # only the most used reply reaches the bar exactly
        add(templ, min_chars=chars, min_conversations=least, exclude_phrases=excl, mode="message")
    return RuleSet(rules, "round3")


def _roughen(part: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Bots and auto-replies inside buyer turns, missing and jumbled timestamps, JD chats."""
    part = part.copy()
    rng = np.random.default_rng(seed)
    n = len(part)
    agent = (part[schema.ROLE] == "agent").to_numpy()
    part.loc[agent & (rng.random(n) < 0.1), schema.ROLE] = "bot"
    part.loc[agent & (rng.random(n) < 0.1), schema.IS_AUTO_REPLY] = True
    part.loc[rng.random(n) < 0.08, schema.TS] = pd.NaT
    jitter = pd.to_timedelta(rng.integers(0, 900, n), unit="s")
    part[schema.TS] = part[schema.TS] + jitter
    convs = part[schema.CONVERSATION_ID].unique()
    jd = set(convs[rng.random(len(convs)) < 0.25].tolist())
    part.loc[part[schema.CONVERSATION_ID].isin(jd), schema.PLATFORM] = "jd"
    return part


def test_round3_variants_same_as_reference(sample: pd.DataFrame, default_ruleset: RuleSet, rules_dir: Path) -> None:
    """Timing metrics x over/within x business hours x platform thresholds (incl. platforms
    with no standard), unanswered with and without bots counting, partial answers with other
    turn limits, regex+phrase matchers, template rules whose early exit does or does not apply."""
    shops = load_shops(rules_dir)
    ids = sorted(sample[schema.CONVERSATION_ID].unique())[:300]
    part = _roughen(sample[sample[schema.CONVERSATION_ID].isin(ids)].reset_index(drop=True), 13)
    counts = Counter({k: v * 25 for k, v in template_counts(part).items()})
    variants = _round3_variants(default_ruleset, max(counts.values()))
    fast = run_rules(part, variants.rules, Env(variants, shops, counts))
    ref = reference_run_rules(part, variants.rules, Env(variants, shops, counts))
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    fired = set(fast[schema.RULE_ID])
    assert len(fired) > len(variants.rules) * 2 // 3  # most variants fire: the comparison has teeth
    by_type = {r.type for r in variants.rules if r.id in fired}
    assert by_type == {"timing", "unanswered", "partial_answer", "regex", "template"}


def test_round3_default_rules_on_rough_chats_same_as_reference(sample: pd.DataFrame, default_ruleset: RuleSet,
                                                               rules_dir: Path) -> None:
    shops = load_shops(rules_dir)
    part = _roughen(sample, 21).sample(frac=1.0, random_state=5).reset_index(drop=True)
    counts = Counter({k: v * 30 for k, v in template_counts(part).items()})
    assert assert_same(part, default_ruleset, shops, counts) > 500


def _occurrences(text: str, phrases: list[str]) -> list[tuple[int, str]]:
    """Brute force: every (end, phrase) occurrence, overlapping ones included."""
    out = []
    for p in phrases:
        i = text.find(p)
        while i >= 0:
            out.append((i + len(p), p))
            i = text.find(p, i + 1)
    return out


def test_phrases_found_many_equals_one_text_at_a_time(sample: pd.DataFrame, default_ruleset: RuleSet) -> None:
    """One automaton pass over joined texts gives each text's phrases, spans and key order
    exactly as a pass per text (and the occurrences a brute-force search finds)."""
    env = Env(default_ruleset, {})
    auto = env.automaton
    phrases = list(auto.keys())
    texts = list(dict.fromkeys(sample[schema.NORM_TEXT].dropna().astype(str)))[:3000]
    rng = random.Random(3)
    glued = [rng.choice(phrases) + rng.choice(phrases) for _ in range(200)]  # phrases meeting at the joints
    texts += ["", "\x00", f"a\x00{phrases[0]}\x00", phrases[0], phrases[0] * 3, *glued, ""]
    texts = list(dict.fromkeys(texts))
    want = [phrases_found(t, auto) for t in texts]
    for sep in ("\x00", None):
        got = phrases_found_many(texts, auto, sep)
        assert [list(g.items()) for g in got] == [list(w.items()) for w in want]
    hits = 0
    for t, w in zip(texts, want, strict=True):
        spans = sorted((e, s, p) for p, sp in w.items() for s, e in sp)
        brute = sorted((e, e - len(p), p) for e, p in _occurrences(t, phrases))
        assert spans == brute, t
        hits += len(spans)
    assert hits > 1000
    assert env.found_many(texts + texts[:50]) == want + want[:50]  # through the Env memo, repeats included


def reference_asked(rule: PartialAnswerRule, env: Env, norm: str) -> tuple:
    """``PartialAnswerRule.asked`` as first written: every clause, the question test with the
    rule's patterns one by one, then its topics."""
    index, joiner, _ = rule._compiled(env)
    out = []
    for m in _CLAUSE_RE.finditer(norm):
        bounds = [m.start()]
        if joiner is not None:
            bounds += [j.start() for j in joiner.finditer(norm, m.start(), m.end()) if j.start() > m.start()]
        bounds.append(m.end())
        for s, e in zip(bounds, bounds[1:], strict=False):
            clause = norm[s:e]
            if rule.question_span(env, clause) is None:
                continue
            topics = index.topics(index.ask, clause)
            if topics:
                out.append((topics, s, e, any(re.search(p, clause) for p in rule.open_patterns)))
    return tuple(out)


def test_asked_equals_reference(sample: pd.DataFrame, default_ruleset: RuleSet) -> None:
    """The batched, pre-checked question finder of partial_answer against the plain one, on
    every buyer text of the sample and on clauses cut in odd places."""
    rule = next(r for r in default_ruleset.rules if isinstance(r, PartialAnswerRule))
    texts = list(dict.fromkeys(sample.loc[sample[schema.ROLE] == "customer", schema.NORM_TEXT].dropna().astype(str)))
    texts += ["包邮吗?多少钱", "多少钱另外包邮吗", "?包邮吗", "材质是什么,几天发货?还有优惠吗", "", "吗吗吗"]
    # joiners only in a later clause, at a clause start, at the end; topics in non-question clauses
    texts += ["好的,多少钱另外包邮吗", "另外多少钱以及包邮吗", "包邮吗?材质呢另外", "材质很好,包邮", "多少钱以及"]
    env = Env(default_ruleset, {})
    want = [reference_asked(rule, env, t) for t in texts]
    assert rule.asked_counts(env, texts) == [len(w) for w in want]
    assert [rule.asked(env, t) for t in texts] == want
    assert [rule.asked(Env(default_ruleset, {}), t) for t in texts[:200]] == want[:200]  # one at a time, fresh
    assert sum(map(len, want)) > 100


def test_jddc_sample_same_as_reference(shared_data: Path, default_ruleset: RuleSet, rules_dir: Path,
                                       rule_tokenizer: Tokenizer) -> None:
    """Real JD chats (less repetitive than the sample logs, no timestamps): the split-wide paths
    give exactly the reference findings, the round-3 rule variants included."""
    cols = ["session_id", "user_id", "waiter_send", "is_transfer", "is_repeat", "sku", "content"]
    raw = pd.read_csv(shared_data / "jddc" / "chat_sample.tsv", sep="\t", header=None, names=cols, dtype=str,
                      quoting=3, keep_default_na=False, nrows=6000)
    seq = raw.groupby("session_id", sort=False).cumcount()
    part = pd.DataFrame({c: pd.Series([None] * len(raw), dtype=object) for c in schema.MESSAGE_COLUMNS})
    part[schema.CONVERSATION_ID] = "jd:" + raw["session_id"]
    part[schema.SEQ] = seq.to_numpy()
    part[schema.SHOP_ID] = "jd"
    part[schema.PLATFORM] = "jd"
    part[schema.ROLE] = np.where(raw["waiter_send"] == "1", "agent", "customer")
    part[schema.AGENT_ID] = np.where(raw["waiter_send"] == "1", "a1", None)
    part[schema.TEXT] = raw["content"]
    part[schema.IS_AUTO_REPLY] = False
    part[schema.TS] = pd.to_datetime(pd.Series([pd.NaT] * len(raw)), utc=True)
    part = tokenize(normalize(part), rule_tokenizer)
    shops = load_shops(rules_dir)
    counts = Counter({k: v * 10 for k, v in template_counts(part).items()})
    assert assert_same(part, default_ruleset, shops, counts) > 300
    variants = _round3_variants(default_ruleset, max(counts.values()))
    fast = run_rules(part, variants.rules, Env(variants, shops, counts))
    pd.testing.assert_frame_equal(fast, reference_run_rules(part, variants.rules, Env(variants, shops, counts)),
                                  check_exact=True)
    assert fast[schema.RULE_ID].nunique() > 10
