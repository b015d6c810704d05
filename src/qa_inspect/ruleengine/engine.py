"""Applying a RuleSet to a partition of whole conversations → findings records.

``apply_rules`` runs every per-conversation rule type. ``template`` rules need counts over the
whole batch, so they run separately: ``template_counts`` per partition, ``merge_template_counts``
across partitions (in whatever process), then ``apply_template_rules`` per partition. Per-call
caches (text views, per-text results) live in an ``Env`` built for the call, never at module
level, so results never depend on what ran before; only what the rules themselves compile to
(automaton, matchers, joined regexes) is kept on the RuleSet for later calls (``Compiled``).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from qa_inspect import schema
from qa_inspect.config import Shop
from qa_inspect.errors import BugError
from qa_inspect.ruleengine.conversation import NEEDED, Conversation, Split, split_conversations
from qa_inspect.ruleengine.matching import (
    CompiledMatcher,
    Found,
    Hit,
    TextView,
    build_automaton,
    compile_scanning,
    phrases_found,
    phrases_found_many,
)
from qa_inspect.ruleengine.ruleset import RuleSet
from qa_inspect.ruleengine.spec import MatcherSpec, RuleBase
from qa_inspect.ruleengine.types import BATCH_TYPES, RuleHit, SequenceRule, SplitHits, _MatchRule
from qa_inspect.text.normalize import normalize_text

_WS = re.compile(r"\s+")


def template_key(norm: str) -> str:
    """What counts as 'the same reply': normalised text without whitespace."""
    return _WS.sub("", norm or "")


SHOP_SEP = "\x1f"  # whitespace, so template_key never leaves it inside a text: keys are unambiguous


def shop_template_key(shop_id: str, key: str) -> str:
    """The count key of reply ``key`` in shop ``shop_id``: counts are kept per shop (a shop's
    agents share one quick-phrase library; the same blurb in two shops is a coincidence)."""
    return f"{shop_id}{SHOP_SEP}{key}"


class Compiled:
    """What a rule set compiles to: the phrase automaton (and the separator that joins texts
    for it), compiled matchers and regexes, normalised customer words and each rule's own
    compiled parts (joined topic regexes...). Pure functions of the rules, kept on the RuleSet
    (``RuleSet.compiled``) so a worker builds them once, not once per partition; nothing here
    depends on the texts. Entries keyed by an object's id keep the object and are rebuilt when
    the id now names another object (ids are recycled)."""

    def __init__(self, rules_key: tuple[int, ...] = ()) -> None:
        self.rules_key = rules_key  # the rules it was built for (a changed list gets a new one)
        self.automaton: list[Any] = []  # [automaton] once built (template rules never need it)
        self.sep: list[str | None] = []
        self.matchers: dict[int, CompiledMatcher] = {}
        self.regex: dict[tuple[str, ...], list[re.Pattern[str]]] = {}
        self.customer_words: dict[int, tuple[RuleBase, frozenset[str]]] = {}
        self.parts: dict[tuple[int, str], tuple[object, Any]] = {}


def _compiled_of(ruleset: RuleSet) -> Compiled:
    """The rule set's ``Compiled``, made anew when its rules list changed since (the rule
    objects it holds keep their ids from being reused while it lives)."""
    key = tuple(map(id, ruleset.rules))
    got = getattr(ruleset, "compiled", None)
    if isinstance(got, Compiled) and got.rules_key == key:
        return got
    got = Compiled(key)
    if hasattr(ruleset, "compiled"):
        ruleset.compiled = got
    return got


class Env:
    """Per-call state: shops, batch template counts and per-text views (the compiled rule set
    is shared with other calls through ``RuleSet.compiled``)."""

    def __init__(self, ruleset: RuleSet, shops: Mapping[str, Shop],
                 template_counts: Mapping[str, int] | None = None) -> None:
        self.ruleset = ruleset
        self.shops = dict(shops)
        self.template_counts = template_counts
        self._batch_counts: dict[str, int] | None = None
        self._memo: dict[tuple[int, str], dict[str, Any]] = {}
        self._views: dict[str, TextView] = {}
        self._found: dict[str, Found] = {}  # per distinct text: the automaton's phrases (see ``found``)
        self._finds: dict[int, dict[str, Sequence[Hit]]] = {}  # per matcher: text -> hits
        self._compiled = _compiled_of(ruleset)

    @property
    def automaton(self) -> Any:
        """One Aho-Corasick automaton over every phrase of the rule set."""
        c = self._compiled
        if not c.automaton:
            phrases: set[str] = set()
            for rule in self.ruleset.rules:
                for spec in _matcher_specs(rule):
                    phrases |= self.matcher(spec).all_phrases()
                phrases |= {normalize_text(p) for p in rule.when.customer_says}
            # a character in no phrase joins texts for one automaton pass (set before the
            # automaton: another thread seeing the automaton finds its separator too)
            c.sep[:] = [next((ch for ch in ("\x00", "\x1e", "\uffff") if not any(ch in p for p in phrases)), None)]
            c.automaton[:] = [build_automaton(phrases)]
        return c.automaton[0]

    def found(self, norm: str) -> Found:
        """The rule-set phrases in one distinct text (``TextView.found`` without the view)."""
        f = self._found.get(norm)
        if f is None:
            f = self._found[norm] = phrases_found(norm, self.automaton)
        return f

    def found_many(self, texts: Sequence[str]) -> list[Found]:
        """``found`` of each of ``texts`` (distinct), the new ones from one automaton pass."""
        memo = self._found
        new = [t for t in dict.fromkeys(texts) if t not in memo]
        if new:
            auto = self.automaton
            memo.update(zip(new, phrases_found_many(new, auto, self._compiled.sep[0]), strict=True))
        return [memo[t] for t in texts]

    def derive(self, template_counts: Mapping[str, int] | None) -> Env:
        """The same compiled rule set and caches with other batch counts (cheap)."""
        other = copy.copy(self)
        other.template_counts = template_counts
        other._batch_counts = None
        other._memo = {}
        return other

    def template_count(self, key: str, shop_id: str, scope: str = "shop") -> int:
        """In how many conversations of this shop (``scope: shop``) or of the whole batch
        (``scope: batch``, summed over shops once per call) the reply ``key`` appears."""
        counts = self.template_counts
        if not counts:
            return 0
        if scope == "shop":
            return counts.get(shop_template_key(shop_id, key), 0)
        if self._batch_counts is None:
            total: Counter[str] = Counter()
            for k, n in counts.items():
                total[k.split(SHOP_SEP, 1)[-1]] += n
            self._batch_counts = total
        return self._batch_counts.get(key, 0)

    def memo_slot(self, owner: object, kind: str) -> dict[str, Any]:
        """The per-call cache of what ``owner`` (a rule) computed (``kind``) per distinct text
        (one dict per owner and kind: a tuple key per text kept thousands of objects alive
        for the garbage collector to scan)."""
        slot = self._memo.get((id(owner), kind))
        if slot is None:
            slot = self._memo[(id(owner), kind)] = {}
        return slot

    def memo(self, owner: object, kind: str, text: str = "") -> Any:
        """What ``owner`` computed (``kind``) about one distinct text; None when not yet."""
        return self.memo_slot(owner, kind).get(text)

    def remember(self, owner: object, kind: str, text: str, value: Any) -> Any:
        self.memo_slot(owner, kind)[text] = value
        return value

    def customer_words(self, rule: RuleBase) -> frozenset[str]:
        """The rule's ``when.customer_says`` phrases, normalised once per rule set."""
        got = self._compiled.customer_words.get(id(rule))
        if got is None or got[0] is not rule:
            got = self._compiled.customer_words[id(rule)] = (
                rule, frozenset(normalize_text(p) for p in rule.when.customer_says))
        return got[1]

    def compiled(self, owner: object, kind: str, build: Callable[[], Any]) -> Any:
        """``owner``'s compiled part ``kind`` (a function of its configuration only, such as a
        joined regex): built once per rule set and process by ``build``, then shared."""
        key = (id(owner), kind)
        got = self._compiled.parts.get(key)
        if got is None or got[0] is not owner:
            got = self._compiled.parts[key] = (owner, build())
        return got[1]

    def matcher(self, spec: MatcherSpec) -> CompiledMatcher:
        m = self._compiled.matchers.get(id(spec))
        if m is None or m.spec is not spec:
            m = self._compiled.matchers[id(spec)] = CompiledMatcher(spec)
        return m

    def view(self, norm: str, tokens: Any) -> TextView:
        v = self._views.get(norm)
        if v is None:
            toks = tokens if isinstance(tokens, list) else (
                list(tokens) if hasattr(tokens, "__len__") and not isinstance(tokens, str) else None)
            v = self._views[norm] = TextView(norm, toks, self.found(norm))
        return v

    def find(self, matcher: CompiledMatcher, norm: str, tokens: Any) -> Sequence[Hit]:
        """``matcher.find`` on the view of ``norm``, once per distinct text (callers only read
        it; no hits is the shared empty tuple)."""
        per = self._finds.get(id(matcher))
        if per is None:
            per = self._finds[id(matcher)] = {}
        hits = per.get(norm)
        if hits is None:
            found = matcher.find(self.view(norm, tokens))
            hits = per[norm] = tuple(found) if found else ()
        return hits

    def conversation_found(self, conv: Conversation) -> frozenset[str]:
        """Rule-set phrases found in any human agent or customer message of ``conv`` (cached
        on the conversation): a rule none of whose phrases is here cannot hit in this chat."""
        got = conv.extra.get("found")
        if got is None:
            got = conv.extra["found"] = frozenset(
                p for idx in (conv.human_agent, conv.customer) for i in idx
                for p in self.found(conv.norm[i]))
        return got

    def regexes(self, patterns: Sequence[str]) -> list[re.Pattern[str]]:
        key = tuple(patterns)
        rx = self._compiled.regex.get(key)
        if rx is None:
            rx = self._compiled.regex[key] = [compile_scanning(p) for p in patterns]
        return rx


def _matcher_specs(rule: RuleBase) -> list[MatcherSpec]:
    if isinstance(rule, MatcherSpec):
        return [rule]
    if isinstance(rule, SequenceRule):
        return [rule.trigger, rule.response]
    return []


def ruleset_words(ruleset: RuleSet) -> list[str]:
    """Rule phrases to add to the tokenizer's user dictionary.

    A phrase matches only on token boundaries, so jieba should know it as a word: build the
    tokenizer with ``Tokenizer.from_rules(rules_dir, extra_words=[*ruleset_words(rs), ...])``.
    """
    words: set[str] = set()
    for rule in ruleset.rules:
        for spec in _matcher_specs(rule):
            words.update(spec.phrases)
            words.update(spec.exclude)
        words.update(rule.when.customer_says)
    return sorted(w for w in words if len(w) >= 2 and not w.isascii())


def _preconditions(rule: RuleBase, conv: Conversation, env: Env, *, said: bool = True) -> bool:
    """The rule's ``when`` on one conversation (``said=False``: customer_says already known true)."""
    w = rule.when
    if w.platforms and conv.platform not in w.platforms:
        return False
    if any(e not in conv.events for e in w.has_event):
        return False
    if any(e in conv.events for e in w.lacks_event):
        return False
    if len(conv.human_agent) < w.min_agent_messages:
        return False
    if said and w.customer_says:
        said_here = conv.extra.get("customer_found")
        if said_here is None:  # phrases found in any customer message, once per conversation
            said_here = conv.extra["customer_found"] = frozenset(
                p for i in conv.customer for p in env.found(conv.norm[i]))
        if env.customer_words(rule).isdisjoint(said_here):
            return False
    return True


def _hit_fields(conv: Conversation, hit: RuleHit) -> tuple[str | None, int, str, int, int, str]:
    """(agent, message index, evidence, start, end, explanation) of one hit."""
    pos = hit.pos
    if pos is not None:
        text = conv.text[pos]
        ok = 0 <= hit.start <= hit.end <= len(text) and len(text) == len(conv.norm[pos])
        start, end = (hit.start, hit.end) if ok and hit.start >= 0 else (-1, -1)
        evidence = text[start:end] if start >= 0 else ""
        agent = conv.agent_id[pos] if conv.is_human_agent(pos) and conv.agent_id[pos] else conv.main_agent
        return agent, conv.seq[pos], evidence, start, end, hit.explanation
    return conv.main_agent, -1, "", -1, -1, hit.explanation


def _record(rule: RuleBase, conv: Conversation, hit: RuleHit) -> dict[str, Any]:
    """One finding as a dict record (the reference path; ``run_rules`` builds columns)."""
    agent, index, evidence, start, end, explanation = _hit_fields(conv, hit)
    return {
        schema.CONVERSATION_ID: conv.conversation_id,
        schema.SHOP_ID: conv.shop_id,
        schema.AGENT_ID: agent,
        schema.MESSAGE_INDEX: index,
        schema.RULE_ID: rule.id,
        schema.DIMENSION: rule.dimension,
        schema.POLARITY: rule.polarity,
        schema.SEVERITY: rule.severity,
        schema.POINTS: float(rule.points),
        schema.EVIDENCE: evidence,
        schema.EVIDENCE_START: start,
        schema.EVIDENCE_END: end,
        schema.EXPLANATION: explanation,
        schema.SOURCE: "rule",
        schema.CONFIDENCE: 1.0,
    }


def _requirements(rule: RuleBase, env: Env) -> list[tuple[str, frozenset[str]]]:
    """(role, phrases) pairs that must all hold for ``rule`` to fire in a chat: some message of
    that role (human agent / customer) contains one of the phrases. Exact, never a guess:
    a phrase-only matcher cannot hit a text none of whose phrases the automaton found."""
    reqs: list[tuple[str, frozenset[str]]] = []
    if isinstance(rule, _MatchRule):
        m = env.matcher(rule)
        if rule.match == "present" and not m.patterns:
            reqs.append((rule.applies_to.role, m.phrases))
    elif isinstance(rule, SequenceRule):
        t = env.matcher(rule.trigger)
        if not t.patterns:
            reqs.append(("customer", t.phrases))
    if rule.when.customer_says:
        reqs.append(("customer", env.customer_words(rule)))
    return reqs


class PhraseIndex:
    """Which conversations of a split have a rule-set phrase in a message of a role.

    The automaton runs once per distinct text; a (role, phrases) requirement becomes one
    boolean mask over messages, so rules skip chats where they cannot fire without a
    per-conversation test.
    """

    def __init__(self, split: Split, env: Env) -> None:
        self.split = split
        self.by_phrase: dict[str, list[int]] = {}
        for j, found in enumerate(env.found_many(split.norm_uniques)):
            for p in found:
                self.by_phrase.setdefault(p, []).append(j)

    def conversations(self, role: str, phrases: frozenset[str]) -> np.ndarray:
        sp = self.split
        hit = np.zeros(len(sp), dtype=bool)
        idx = [j for p in phrases for j in self.by_phrase.get(p, ())]
        if idx:
            texts = np.zeros(len(sp.norm_uniques), dtype=bool)
            texts[idx] = True
            msgs = texts[sp.norm_codes] & (sp.human_agent if role == "agent" else sp.customer)
            hit[sp.conv_of[msgs]] = True
        return hit


def _when_mask(rule: RuleBase, split: Split) -> np.ndarray:
    """``_preconditions`` of every conversation of the split at once, except customer_says
    (a phrase requirement, see ``_requirements``)."""
    w = rule.when
    ok = np.ones(len(split), dtype=bool)
    if w.platforms:
        ok &= np.isin(np.asarray(split.platforms, dtype=object),
                      np.asarray(w.platforms, dtype=object))
    if w.has_event or w.lacks_event:
        events = np.asarray(split.cols["event"], dtype=object)
        for e in w.has_event:
            ok &= np.bincount(split.conv_of[events == e], minlength=len(split)) > 0
        for e in w.lacks_event:
            ok &= np.bincount(split.conv_of[events == e], minlength=len(split)) == 0
    if w.min_agent_messages:
        ok &= np.bincount(split.conv_of[split.human_agent], minlength=len(split)) >= w.min_agent_messages
    return ok


class _Hits:
    """Hits collected as flat columns — (conversation, rule, position, start, end,
    explanation); position -1 is the whole conversation — and turned into findings once at
    the end (a dict, or a Conversation kept alive, per finding were hot spots)."""

    def __init__(self) -> None:
        self.ci: list[int] = []
        self.ri: list[int] = []
        self.pos: list[int] = []
        self.start: list[int] = []
        self.end: list[int] = []
        self.expl: list[str] = []

    def add(self, ci: int, ri: int, hits: Sequence[RuleHit]) -> None:
        k = len(hits)
        self.ci.extend([ci] * k)
        self.ri.extend([ri] * k)
        for h in hits:
            if h.pos is not None and h.pos < 0:  # -1 means "whole conversation" here
                raise BugError(f"rule hit at negative position {h.pos}")
            self.pos.append(-1 if h.pos is None else h.pos)
            self.start.append(h.start)
            self.end.append(h.end)
            self.expl.append(h.explanation)

    def extend(self, ri: int, hits: SplitHits) -> None:
        self.ci.extend(hits.ci)
        self.ri.extend([ri] * len(hits.ci))
        self.pos.extend(hits.pos)
        self.start.extend(hits.start)
        self.end.extend(hits.end)
        self.expl.extend(hits.expl)

    def frame(self, split: Split, rules: Sequence[RuleBase], dtypes: Mapping[str, Any]) -> pd.DataFrame:
        """The findings frame, conversation-major and rules in order (a stable sort keeps each
        (conversation, rule)'s hits in the order the rule gave them); fields as ``_hit_fields``.
        ``dtypes``: those of ``schema.empty_findings()``."""
        n = len(self.ci)
        if not n:
            return schema.findings_frame([])
        ci_arr, ri_arr = np.asarray(self.ci, dtype=np.int64), np.asarray(self.ri, dtype=np.int64)
        order = np.lexsort((ri_arr, ci_arr))
        ci_o = ci_arr[order]
        text, norm, seq, agent_col = split.cols["text"], split.cols["norm"], split.cols["seq"], split.cols["agent"]
        human, first = split.human_list, split.first_list
        # column-wise (a loop of appends per finding was the hot spot): the message of each
        # hit, its span kept only where it fits the text, the agent where the message is not theirs
        pos_o = np.asarray(self.pos, dtype=np.int64)[order]
        st_o = np.asarray(self.start, dtype=np.int64)[order]
        en_o = np.asarray(self.end, dtype=np.int64)[order]
        whole = pos_o < 0  # the whole conversation: its main agent, no message, no span
        m_o = np.where(whole, 0, np.asarray(first, dtype=np.int64)[ci_o] + pos_o)
        m_l, whole_l = m_o.tolist(), whole.tolist()
        t_len = np.fromiter((len(text[m]) for m in m_l), dtype=np.int64, count=n)
        n_len = np.fromiter((len(norm[m]) for m in m_l), dtype=np.int64, count=n)
        ok = ~whole & (st_o >= 0) & (st_o <= en_o) & (en_o <= t_len) & (t_len == n_len)
        starts, ends = np.where(ok, st_o, -1), np.where(ok, en_o, -1)
        evidence = [text[m][s:e] if o else "" for m, s, e, o in zip(m_l, st_o.tolist(), en_o.tolist(), ok.tolist(),
                                                                    strict=True)]
        index = [-1 if w else seq[m] for m, w in zip(m_l, whole_l, strict=True)]
        agent: list[str | None] = []
        for m, w, ci in zip(m_l, whole_l, ci_o.tolist(), strict=True):
            a = None if w else agent_col[m]
            agent.append(a if a and human[m] else split.main_agent(ci))
        conv_ids = np.asarray([str(split.conv_ids[f]) for f in first], dtype=object)
        per_rule = [(r.id, r.dimension, r.polarity, r.severity, float(r.points)) for r in rules]
        rule_o = ri_arr[order]
        cols: dict[str, Any] = {
            schema.CONVERSATION_ID: conv_ids[ci_o].tolist(),
            schema.SHOP_ID: np.asarray(split.shops, dtype=object)[ci_o].tolist(),
            schema.AGENT_ID: agent, schema.MESSAGE_INDEX: index,
            **{c: np.asarray([v[j] for v in per_rule], dtype=object)[rule_o].tolist()
               for j, c in enumerate((schema.RULE_ID, schema.DIMENSION, schema.POLARITY, schema.SEVERITY,
                                      schema.POINTS))},
            schema.EVIDENCE: evidence, schema.EVIDENCE_START: starts, schema.EVIDENCE_END: ends,
            schema.EXPLANATION: np.asarray(self.expl, dtype=object)[order].tolist(),
            schema.SOURCE: ["rule"] * n, schema.CONFIDENCE: [1.0] * n,
        }
        out: dict[str, Any] = {}
        for c in schema.FINDING_COLUMNS:  # straight to each column's dtype (a frame-wide astype was slower)
            d = dtypes[c]
            out[c] = (pd.array(pa.array(cols[c], type=pa.large_string()), dtype=d) if isinstance(d, pd.StringDtype)
                      else np.asarray(cols[c], dtype=d))
        return pd.DataFrame(out, columns=list(schema.FINDING_COLUMNS))


def run_rules(partition: pd.DataFrame, rules: Sequence[RuleBase], env: Env) -> pd.DataFrame:
    """Evaluate ``rules`` (a subset of ``env.ruleset``) with the full rule set's phrase index.

    First, per rule, the conversations where it can fire at all (exact tests over the whole
    partition: phrase requirements, type-specific ``plan``); then conversation by
    conversation, the candidate rules in rule order — the same findings in the same order as
    evaluating every rule on every conversation.
    """
    return run_rule_groups(partition, [(rules, env)])[0]


def run_rule_groups(partition: pd.DataFrame, groups: Sequence[tuple[Sequence[RuleBase], Env]]
                    ) -> list[pd.DataFrame]:
    """``run_rules`` of several (rules, env) groups over one shared ``Split``: one findings
    frame per group, each exactly what ``run_rules`` gives for that group alone. Splitting
    the partition and building each conversation happen once for all groups.

    Rules with ``evaluate_split`` (message rules) give all their hits at once; the others are
    evaluated conversation by conversation. Findings are ordered at the end.
    """
    schema.require_columns(partition, NEEDED, "ruleengine")
    if partition.empty or not any(rules for rules, _ in groups):
        return [schema.findings_frame([]) for _ in groups]
    split = split_conversations(partition)
    flat = [(rule, env, g) for g, (rules, env) in enumerate(groups) for rule in rules]
    index_in_group = [i for rules, _ in groups for i in range(len(rules))]
    outs = [_Hits() for _ in groups]
    cand = np.ones((len(flat), len(split)), dtype=bool)
    for ri, (rule, env, _) in enumerate(flat):
        cand[ri] = _when_mask(rule, split)
        for req in _requirements(rule, env):
            if cand[ri].any():
                cand[ri] &= split.phrase_index(env).conversations(*req)
        plan = getattr(rule, "plan", None)  # type-specific exact narrowing / partition-wide work
        if plan is not None and cand[ri].any():
            cand[ri] = plan(split, cand[ri], env)
    for ri, (rule, env, g) in enumerate(flat):
        whole = getattr(rule, "evaluate_split", None)
        if whole is not None and cand[ri].any():  # after every plan: they may share caches
            outs[g].extend(index_in_group[ri], whole(split, cand[ri], env))
            cand[ri] = False
    conv_idx, rule_idx = np.nonzero(cand.T)  # conversation-major, rules in order
    ci_list, ri_list = conv_idx.tolist(), rule_idx.tolist()
    k, n = 0, len(ci_list)
    while k < n:
        ci = ci_list[k]
        conv = split.conversation(ci)
        while k < n and ci_list[k] == ci:
            ri = ri_list[k]
            rule, env, g = flat[ri]
            hits = rule.evaluate(conv, env)  # preconditions hold: they are in ``cand``
            if hits:
                outs[g].add(ci, index_in_group[ri], hits)
            k += 1
    dtypes = schema.empty_findings().dtypes.to_dict()
    return [out.frame(split, rules, dtypes) for out, (rules, _) in zip(outs, groups, strict=True)]


def apply_rules(partition: pd.DataFrame, ruleset: RuleSet, shops: Mapping[str, Shop]) -> pd.DataFrame:
    """Findings (schema.FINDING_COLUMNS) of every non-batch rule on a partition.

    Input: whole conversations with schema.MESSAGE_COLUMNS + ``norm_text`` + ``tokens``.
    Output: one row per hit; ``message_index`` is the message's ``seq`` (-1 for conversation
    findings), evidence offsets index the original ``text``. Template rules are skipped here
    (see ``apply_template_rules``). Timing rules are N/A where ``ts`` is missing.
    """
    rules = [r for r in ruleset.rules if r.type not in BATCH_TYPES]
    return run_rules(partition, rules, Env(ruleset, shops))


def apply_all_rules(partition: pd.DataFrame, ruleset: RuleSet, counts: Mapping[str, int],
                    shops: Mapping[str, Shop]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(apply_rules(...), apply_template_rules(...))`` of one partition in one pass.

    The frames are exactly those of the two calls; the partition is split once and each
    conversation built once for both (the pipeline's rules stage calls this).
    """
    env = Env(ruleset, shops)
    rules = [r for r in ruleset.rules if r.type not in BATCH_TYPES]
    batch = [r for r in ruleset.rules if r.type in BATCH_TYPES]
    found, templ = run_rule_groups(partition, [(rules, env), (batch, env.derive(counts))])
    return found, templ


def template_counts(partition: pd.DataFrame) -> Counter[str]:
    """In how many conversations of each shop each human-agent reply text appears.

    Keys are ``shop_template_key(shop_id, template_key(norm_text))``; auto-replies never count.
    A conversation belongs to one shop, so per-partition counts add up exactly (merge) and the
    batch-wide count of a text is the sum over shops (``Env.template_count(scope="batch")``).
    """
    schema.require_columns(partition, [schema.CONVERSATION_ID, schema.SHOP_ID, schema.ROLE,
                                       schema.IS_AUTO_REPLY, schema.NORM_TEXT], "template_counts")
    if partition.empty:
        return Counter()
    auto = partition[schema.IS_AUTO_REPLY].fillna(False).astype(bool)
    agent = partition[(partition[schema.ROLE] == "agent") & ~auto]
    texts = agent[schema.NORM_TEXT].astype("object").fillna("")
    uniq = {t: template_key(t) for t in pd.unique(texts)}  # chat logs repeat: strip each text once
    keys = [uniq[t] for t in texts]
    shops = agent[schema.SHOP_ID].astype("object").fillna("").astype(str)
    full = (shops + SHOP_SEP).to_numpy(dtype=object) + pd.Series(keys, dtype=object).to_numpy()
    pairs = pd.DataFrame({"c": agent[schema.CONVERSATION_ID].to_numpy(), "k": full, "e": [k == "" for k in keys]})
    pairs = pairs[~pairs["e"]].drop_duplicates(["c", "k"])
    return Counter(pairs["k"].value_counts().to_dict())


def merge_template_counts(parts: Iterable[Mapping[str, int]]) -> Counter[str]:
    """Sum per-partition counts (partitions hold whole conversations, so sums are exact)."""
    total: Counter[str] = Counter()
    for p in parts:
        total.update(p)
    return total


def apply_template_rules(partition: pd.DataFrame, ruleset: RuleSet, counts: Mapping[str, int],
                         shops: Mapping[str, Shop] | None = None) -> pd.DataFrame:
    """Findings of the batch-level ``template`` rules given counts merged over the whole batch."""
    rules = [r for r in ruleset.rules if r.type in BATCH_TYPES]
    return run_rules(partition, rules, Env(ruleset, shops or {}, counts))
