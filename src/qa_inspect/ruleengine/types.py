"""Rule types: the YAML parameters of each type and how it evaluates a conversation.

The registry ``RULE_TYPES`` maps the ``type:`` of a rule to its class; it is filled here, in
one place, and nothing else registers into it. Each class's ``evaluate(conv, env)`` returns
``RuleHit``s; the engine turns them into finding records. Types never read global state:
shops, thresholds and batch counts all come in through ``env`` or the rule's own fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from qa_inspect.config import BusinessHours, Shop
from qa_inspect.registry import Registry
from qa_inspect.ruleengine.conversation import Conversation, Split
from qa_inspect.ruleengine.spec import MatcherSpec, RuleBase, Strict, check_regexes

if TYPE_CHECKING:
    from qa_inspect.ruleengine.engine import Env


@dataclass(frozen=True)
class RuleHit:
    """One firing: position in the conversation (None = whole conversation) and a span."""

    pos: int | None
    start: int = -1
    end: int = -1
    explanation: str = ""


@dataclass
class SplitHits:
    """Hits of one rule over a whole split, conversation-major, as ``evaluate`` would give
    them conversation by conversation (position -1: the whole conversation)."""

    ci: list[int]
    pos: list[int]
    start: list[int]
    end: list[int]
    expl: list[str]

    def add(self, ci: int, pos: int, start: int, end: int, expl: str) -> None:
        self.ci.append(ci)
        self.pos.append(pos)
        self.start.append(start)
        self.end.append(end)
        self.expl.append(expl)


class _SafeDict(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(rule: RuleBase, default: str, **fields: Any) -> str:
    template = rule.explanation or default
    return template.format_map(_SafeDict(name=rule.name, **fields))


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f}"


# --- message-level matching: phrase and regex ---------------------------------------------------

class _MatchRule(RuleBase, MatcherSpec):
    match: Literal["present", "absent"] = Field(
        "present", description="present: fire on a hit; absent: fire when no candidate message hits")

    def candidates(self, conv: Conversation) -> list[int]:
        pos = conv.positions(self.applies_to.role)
        w = self.applies_to.window
        if self.applies_to.position == "first":
            return pos[:w]
        if self.applies_to.position == "last":
            return pos[-w:]
        return pos

    def plan(self, split: Split, cand: np.ndarray, env: Env) -> np.ndarray:
        """The chats where this rule fires, from one ``find`` per distinct candidate text:
        present fires where a candidate message hits, absent where there are candidates and
        none hits (``evaluate`` then only renders the finding)."""
        matcher = env.matcher(self)
        a = self.applies_to
        key = ("candidates", a.role, a.position, a.window if a.position != "any" else 0)
        got = split.cache.get(key)
        if got is None:  # the candidate messages of every chat: shared by rules with the same scope
            role = split.human_agent if a.role == "agent" else split.customer
            msgs = np.flatnonzero(role)  # every message of the role, so first/last ranks are right
            conv = split.conv_of[msgs]
            if a.position != "any" and len(msgs):
                new = np.ones(len(msgs), dtype=bool)
                new[1:] = conv[1:] != conv[:-1]
                first = np.flatnonzero(new)  # index into msgs of each conversation's first
                size = np.diff(np.append(first, len(msgs)))
                rank = np.arange(len(msgs)) - np.repeat(first, size)
                if a.position == "last":
                    rank = np.repeat(size, size) - 1 - rank
                keep = rank < a.window
                msgs, conv = msgs[keep], conv[keep]
            has_cands = np.zeros(len(split), dtype=bool)
            has_cands[conv] = True
            got = split.cache[key] = (msgs, conv, split.norm_codes[msgs], has_cands)
        msgs, conv, codes, has_cands = got
        if not len(msgs):
            return np.zeros(len(split), dtype=bool)
        live = cand[conv]
        texts = np.zeros(len(split.norm_uniques), dtype=bool)
        by_phrase = split.phrase_index(env).by_phrase
        if matcher.patterns:
            texts[codes[live]] = True
            if matcher.any_pattern is not None:
                # ``find``'s own first test, without a call per text: no phrase of the rule in
                # the text and the joined regex finds nothing (or an empty text) -> no hit
                phrased = np.zeros(len(texts), dtype=bool)
                phrased[[j for p in matcher.phrases for j in by_phrase.get(p, ())]] = True
                search, uniq = matcher.any_pattern.search, split.norm_uniques
                drop = [j for j in np.flatnonzero(texts & ~phrased).tolist()
                        if not uniq[j] or search(uniq[j]) is None]
                texts[drop] = False
        else:  # a phrase-only matcher can only hit texts holding one of its phrases
            texts[[j for p in matcher.phrases for j in by_phrase.get(p, ())]] = True
            texts &= np.bincount(codes[live], minlength=len(texts)) > 0
        hit_text = np.zeros(len(split.norm_uniques), dtype=bool)
        for j in np.flatnonzero(texts).tolist():
            if env.find(matcher, split.norm_uniques[j], split.tokens[split.first_of[j]]):
                hit_text[j] = True
        split.cache[("hit_text", id(self))] = hit_text  # for ``evaluate_split``: exact for live chats
        hit = np.zeros(len(split), dtype=bool)
        hit[conv[live & hit_text[codes]]] = True
        if self.match == "present":
            return cand & hit
        return cand & has_cands & ~hit

    def evaluate_split(self, split: Split, cand: np.ndarray, env: Env) -> SplitHits:
        """``evaluate`` of every chat in ``cand`` (a subset of what ``plan`` returned) at once:
        ``plan`` already knows which candidate messages hit, so only hits are rendered."""
        a = self.applies_to
        msgs, conv, codes, _ = split.cache[("candidates", a.role, a.position, a.window if a.position != "any" else 0)]
        first = np.asarray([s for s, _ in split.bounds], dtype=np.int64)
        out = SplitHits([], [], [], [], [])
        if self.match == "absent":  # plan: no candidate message hits; one finding per chat
            where = {"first": "开场", "last": "结束", "any": "整通会话"}[a.position]
            expl = render(self, "{name}：{where}未出现（{description}）", where=where, description=self.description)
            ci = np.flatnonzero(cand)
            if a.position == "any":
                pos = np.full(len(ci), -1, dtype=np.int64)
            else:
                keep = cand[conv]
                m, c = msgs[keep], conv[keep]
                edge = np.ones(len(c), dtype=bool)  # first (or last) candidate of each chat
                if a.position == "first":
                    edge[1:] = c[1:] != c[:-1]
                else:
                    edge[:-1] = c[1:] != c[:-1]
                pos = m[edge] - first[c[edge]]
            out.ci, out.pos = ci.tolist(), pos.tolist()
            out.start, out.end, out.expl = [-1] * len(ci), [-1] * len(ci), [expl] * len(ci)
            return out
        matcher = env.matcher(self)
        hit_text = split.cache[("hit_text", id(self))]
        keep = cand[conv] & hit_text[codes]
        text, tokens, starts = split.cols["text"], split.tokens, first.tolist()
        for m, ci, j in zip(msgs[keep].tolist(), conv[keep].tolist(), codes[keep].tolist(), strict=True):
            found = env.find(matcher, split.norm_uniques[j], tokens[m])
            labels = "、".join(dict.fromkeys(h[2] for h in found))  # hits are (start, end, label)
            hs, he, _ = found[0]
            out.add(ci, m - starts[ci], hs, he,
                    render(self, "{name}：命中「{evidence}」", evidence=text[m][hs:he], phrase=labels))
        return out

    def evaluate(self, conv: Conversation, env: Env) -> list[RuleHit]:
        matcher = env.matcher(self)
        cands = self.candidates(conv)
        if not cands:
            return []  # nothing to judge: N/A
        hits: list[RuleHit] = []
        for i in cands:  # run_rules calls this only where ``plan`` found the answer
            found = env.find(matcher, conv.norm[i], conv.tokens[i])
            if not found:
                continue
            if self.match == "absent":
                return []
            labels = "、".join(dict.fromkeys(h[2] for h in found))  # hits are (start, end, label)
            hs, he, _ = found[0]
            ev = conv.text[i][hs:he]
            hits.append(RuleHit(i, hs, he, render(
                self, "{name}：命中「{evidence}」", evidence=ev, phrase=labels)))
        if self.match == "absent":
            anchor: int | None = None
            if self.applies_to.position == "first":
                anchor = cands[0]
            elif self.applies_to.position == "last":
                anchor = cands[-1]
            where = {"first": "开场", "last": "结束", "any": "整通会话"}[self.applies_to.position]
            return [RuleHit(anchor, explanation=render(self, "{name}：{where}未出现（{description}）",
                                                       where=where, description=self.description))]
        return hits


class PhraseRule(_MatchRule):
    type: Literal["phrase"]

    @model_validator(mode="after")
    def _needs_phrases(self) -> PhraseRule:
        if not self.phrases:
            raise ValueError("a phrase rule needs 'phrases'")
        return self


class RegexRule(_MatchRule):
    type: Literal["regex"]
    negation: bool = False
    token_boundary: bool = False

    @model_validator(mode="after")
    def _needs_patterns(self) -> RegexRule:
        if not self.patterns:
            raise ValueError("a regex rule needs 'patterns'")
        return self


# --- timing ------------------------------------------------------------------------------------

def _shop_clock(conv: Conversation, shops: dict[str, Shop]) -> tuple[ZoneInfo, BusinessHours]:
    return _clock_of(conv.shop_id, conv.platform, shops)


def _clock_of(shop_id: str, platform: str, shops: dict[str, Shop]) -> tuple[ZoneInfo, BusinessHours]:
    shop = shops.get(shop_id)
    if shop is not None:
        return ZoneInfo(shop.timezone), shop.business_hours
    tz = "Asia/Taipei" if platform == "shopee" else "Asia/Shanghai"
    return ZoneInfo(tz), BusinessHours()


def clock_start(ts: pd.Timestamp, tz: ZoneInfo, hours: BusinessHours) -> pd.Timestamp:
    """When the reply clock starts for a message sent at ``ts``: at once inside business hours,
    else at the next opening (a 23:50 question answered at 09:05 is not a 9-hour delay)."""
    local = ts.tz_convert(tz)
    start_m, end_m = hours.minutes()
    minute = local.hour * 60 + local.minute
    if start_m <= minute < end_m:
        return ts
    day = local.date() if minute < start_m else local.date() + timedelta(days=1)
    opening = datetime.combine(day, time(start_m // 60, start_m % 60), tzinfo=tz)
    return pd.Timestamp(opening).tz_convert("UTC")


def partition_clocks(split: Split, shops: dict[str, Shop]) -> None:
    """``clock_start`` of every timed customer message of a split, vectorised per shop clock.

    Sets ``split.extra["clock_ns"]`` (one list for the split, indexed by ``conv.offset + i``,
    handed to every conversation's ``extra``); None where not computed, e.g. an opening time
    that cannot be built: the caller then falls back to ``clock_start`` itself, so errors
    and results stay those of the scalar path.
    """
    n = len(split.conv_of)
    clock: list[int | None] = [None] * n
    groups: dict[tuple[str, int, int], list[int]] = {}
    keys: dict[tuple[str, str], tuple[str, int, int]] = {}
    for ci in range(len(split)):
        sp = (split.shops[ci], split.platforms[ci])
        k = keys.get(sp)
        if k is None:
            tz, hours = _clock_of(*sp, shops)
            k = keys[sp] = (tz.key, *hours.minutes())
        groups.setdefault(k, []).append(ci)
    for (tz_key, start_m, end_m), members in groups.items():
        in_group = np.zeros(len(split), dtype=bool)
        in_group[members] = True
        idx = np.flatnonzero(in_group[split.conv_of] & split.customer & split.has_ts)
        if not len(idx):
            continue
        tz = ZoneInfo(tz_key)
        ns = split.ts_ns[idx]
        local = pd.DatetimeIndex(ns, tz="UTC").tz_convert(tz)
        minute = np.asarray(local.hour, dtype=np.int64) * 60 + np.asarray(local.minute, dtype=np.int64)
        inside = (start_m <= minute) & (minute < end_m)
        out: list[int | None] = ns.tolist()
        outside = np.flatnonzero(~inside)
        if len(outside):
            midnight = np.asarray(local[outside].tz_localize(None).normalize().asi8, dtype=np.int64)
            day_ns = midnight + (minute[outside] >= start_m).astype(np.int64) * 86_400_000_000_000
            openings: dict[int, int | None] = {}
            for d in np.unique(day_ns).tolist():
                try:
                    day = pd.Timestamp(d).date()
                    opening = datetime.combine(day, time(start_m // 60, start_m % 60), tzinfo=tz)
                    openings[d] = pd.Timestamp(opening).tz_convert("UTC").value
                except (ValueError, OverflowError):
                    openings[d] = None
            for j, d in zip(outside.tolist(), day_ns.tolist(), strict=True):
                out[j] = openings[d]
        for j, v in zip(idx.tolist(), out, strict=True):
            clock[j] = v
    split.extra["clock_ns"] = clock


@dataclass(frozen=True, eq=False)
class Delays:
    """Every (agent position, seconds waited) of a split as flat arrays in (conversation,
    reply) order; ``delays[ci]`` is conversation ``ci``'s list, as ``TimingRule._delays`` gives it.
    (33k tuples per partition were a garbage-collection hot spot; most are never looked at.)"""

    conv: np.ndarray  # conversation index of each delay
    pos: np.ndarray  # position of the reply in its conversation
    secs: np.ndarray  # float64 seconds waited
    starts: np.ndarray  # delays of conversation ci: [starts[ci], starts[ci + 1])

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, ci: int) -> list[tuple[int, float]]:
        s, e = int(self.starts[ci]), int(self.starts[ci + 1])
        return list(zip(self.pos[s:e].tolist(), self.secs[s:e].tolist(), strict=True))

    def __iter__(self) -> Iterator[list[tuple[int, float]]]:
        return (self[ci] for ci in range(len(self)))


_SAFE_NS = 2 ** 62  # |a|, |b| below this: a - b cannot overflow int64


def partition_delays(split: Split, shops: dict[str, Shop], business_hours_only: bool) -> Delays:
    """``TimingRule._delays`` of every conversation of a split.

    A human reply answers the first customer message since the previous human reply of the
    chat: one segment per reply, found with array operations instead of a loop per chat.
    Seconds are ``max(0.0, (t1 - start) / 1e9)`` as the scalar path computes them (int64
    difference, then float division: the same float as Python's int arithmetic).
    """
    n = len(split.conv_of)
    conv_of, human = split.conv_of, split.human_agent
    empty = np.zeros(0, dtype=np.int64)
    if not n:
        return Delays(empty, empty, np.zeros(0, dtype=np.float64), np.zeros(len(split) + 1, dtype=np.int64))
    new_seg = np.ones(n, dtype=bool)
    new_seg[1:] = (conv_of[1:] != conv_of[:-1]) | human[:-1]
    seg = np.cumsum(new_seg) - 1
    first_cust = np.full(int(seg[-1]) + 1, -1, dtype=np.int64)
    cust = np.flatnonzero(split.customer)[::-1]
    first_cust[seg[cust]] = cust  # written last-to-first: the first customer of each segment stays
    replies = np.flatnonzero(human)
    waits = first_cust[seg[replies]]
    ok = waits >= 0
    waits, replies = waits[ok], replies[ok]
    timed = split.has_ts[waits] & split.has_ts[replies]
    waits, replies = waits[timed], replies[timed]
    t1 = split.ts_ns[replies]
    if not business_hours_only:
        start = split.ts_ns[waits]
    else:
        clock = split.extra.get("clock_ns")
        starts: list[int | None] = ([clock[w] for w in waits.tolist()] if clock is not None
                                    else [None] * len(waits))
        for k in [k for k, c in enumerate(starts) if c is None]:  # not computed: the scalar clock
            w = int(waits[k])
            ci = int(conv_of[w])
            tz, hours = _clock_of(split.shop(ci), split.platform(ci), shops)
            starts[k] = clock_start(pd.Timestamp(int(split.ts_ns[w]), tz="UTC"), tz, hours).value
        start = np.asarray(starts, dtype=np.int64) if starts else empty
    safe = (np.abs(t1) < _SAFE_NS) & (np.abs(start) < _SAFE_NS)
    secs = (np.where(safe, t1, 0) - np.where(safe, start, 0)) / 1e9
    for k in np.flatnonzero(~safe).tolist():  # far-apart dates: Python's exact integers
        secs[k] = (int(t1[k]) - int(start[k])) / 1e9
    secs = np.where(secs > 0.0, secs, 0.0)
    conv = conv_of[replies]
    bounds_start = np.asarray([s for s, _ in split.bounds], dtype=np.int64)
    pos = replies - bounds_start[conv]
    per_conv = np.bincount(conv, minlength=len(split))
    starts_arr = np.zeros(len(split) + 1, dtype=np.int64)
    np.cumsum(per_conv, out=starts_arr[1:])
    return Delays(conv, pos, secs, starts_arr)


class TimingRule(RuleBase):
    """Response-time standards; thresholds per platform, counted inside business hours only."""

    type: Literal["timing"]
    metric: Literal["first_response", "reply_delay", "slow_reply_count"]
    threshold_s: float | dict[str, float] = Field(
        description="seconds; or per platform {default: 180, jd: 30}")
    max_count: int = Field(0, ge=0, description="slow_reply_count: fire when more slow replies than this")
    fire_when: Literal["over", "within"] = "over"
    business_hours_only: bool = True

    @field_validator("threshold_s")
    @classmethod
    def _thresholds(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        from qa_inspect import schema

        if isinstance(v, dict):
            for k, s in v.items():
                if k != "default" and k not in schema.PLATFORMS:
                    raise ValueError(f"unknown platform '{k}' (use platform names or 'default')")
                if s < 0:
                    raise ValueError("thresholds must be >= 0")
        elif v < 0:
            raise ValueError("thresholds must be >= 0")
        return v

    def threshold(self, platform: str) -> float | None:
        if isinstance(self.threshold_s, dict):
            return self.threshold_s.get(platform, self.threshold_s.get("default"))
        return float(self.threshold_s)

    def _delays(self, conv: Conversation, env: Env) -> list[tuple[int, float]]:
        """(agent position, seconds waited) for every human reply to a customer turn.

        Depends only on the conversation, the shop clock and ``business_hours_only``, so it is
        computed once per conversation for all timing rules (clock_start is the costly part).
        """
        key = ("delays", self.business_hours_only)
        got = conv.extra.get(key)
        if got is not None:
            return got
        per_conv = conv.extra.get(("split_delays", self.business_hours_only))
        if per_conv is not None:  # computed for the whole partition by ``plan``
            got = conv.extra[key] = per_conv[conv.index]
            return got
        clock: list[int | None] | None = conv.extra.get("clock_ns") if self.business_hours_only else None
        shop_clock: tuple[ZoneInfo, BusinessHours] | None = None
        out: list[tuple[int, float]] = []
        waiting: int | None = None
        for i in range(len(conv)):
            if conv.role[i] == "customer" and waiting is None:
                waiting = i
            elif conv.is_human_agent(i) and waiting is not None:
                t0, t1 = conv.ts_ns[waiting], conv.ts_ns[i]
                if t0 is not None and t1 is not None:
                    if not self.business_hours_only:
                        start = t0
                    else:
                        c = clock[conv.offset + waiting] if clock is not None else None
                        if c is None:
                            shop_clock = shop_clock or _shop_clock(conv, env.shops)
                            c = clock_start(pd.Timestamp(t0, tz="UTC"), *shop_clock).value
                        start = c
                    out.append((i, max(0.0, (t1 - start) / 1e9)))
                waiting = None
        conv.extra[key] = out
        return out

    def plan(self, split: Split, cand: np.ndarray, env: Env) -> np.ndarray:
        """Reply clocks of every customer message of the partition at once (vectorised
        ``clock_start``; shared by all timing rules of the call through ``conv.extra``)."""
        platforms = split.platforms
        limits = {p: self.threshold(p) for p in set(platforms)}
        timed = split.timed
        if any(v is None for v in limits.values()):
            timed = timed & np.asarray([limits[p] is not None for p in platforms], dtype=bool)
        cand = cand & timed  # else N/A: no standard for the platform, or no timestamps
        if not cand.any():
            return cand
        bho = self.business_hours_only
        if bho and "clock_ns" not in split.extra:
            partition_clocks(split, env.shops)
        if ("split_delays", bho) not in split.extra:
            split.extra[("split_delays", bho)] = partition_delays(split, env.shops, bho)
        delays: Delays = split.extra[("split_delays", bho)]
        conv, secs = delays.conv, delays.secs
        # the firing tests of ``evaluate``, for every conversation at once
        limit = np.asarray([np.nan if limits[p] is None else limits[p] for p in platforms], dtype=np.float64)
        slow = secs > limit[conv]
        per_conv = np.bincount(conv, minlength=len(split))
        hit = slow == (self.fire_when == "over")
        if self.metric == "first_response":
            first = np.zeros(len(split), dtype=bool)
            starts = np.flatnonzero(np.r_[True, conv[1:] != conv[:-1]]) if len(conv) else np.zeros(0, dtype=np.int64)
            first[conv[starts]] = hit[starts]
            fires = first
        elif self.metric == "reply_delay":
            fires = np.bincount(conv[hit], minlength=len(split)) > 0
        else:
            n_slow = np.bincount(conv[slow], minlength=len(split))
            fires = (n_slow > self.max_count) == (self.fire_when == "over")
        return cand & fires & (per_conv > 0)

    def evaluate_split(self, split: Split, cand: np.ndarray, env: Env) -> SplitHits:
        """``evaluate`` of every chat in ``cand`` (a subset of what ``plan`` returned: timed,
        a standard for the platform, at least one delay) from the partition's ``Delays``."""
        delays: Delays = split.extra[("split_delays", self.business_hours_only)]
        out = SplitHits([], [], [], [], [])
        over = self.fire_when == "over"
        cmp = "超过" if over else "未超过"
        text, first, platforms = split.cols["text"], split.first_list, split.platforms
        starts = delays.starts.tolist()
        pos_all, secs_all = delays.pos.tolist(), delays.secs.tolist()
        limits: dict[str, float | None] = {}
        for ci in np.flatnonzero(cand).tolist():
            plat = platforms[ci]
            limit = limits[plat] if plat in limits else limits.setdefault(plat, self.threshold(plat))
            s0, s1 = starts[ci], starts[ci + 1]
            if limit is None or s0 == s1:
                continue
            if self.metric == "first_response":
                pos, sec = pos_all[s0], secs_all[s0]
                if (sec > limit) == over:
                    out.add(ci, pos, 0, len(text[first[ci] + pos]),
                            render(self, "首次人工响应 {seconds} 秒，{cmp} {limit} 秒标准",
                                   seconds=_fmt_s(sec), cmp=cmp, limit=_fmt_s(limit)))
            elif self.metric == "reply_delay":
                for n, k in enumerate(range(s0, s1), start=1):
                    pos, sec = pos_all[k], secs_all[k]
                    if (sec > limit) == over:
                        out.add(ci, pos, 0, len(text[first[ci] + pos]),
                                render(self, "第 {n} 次回复等待 {seconds} 秒，{cmp} {limit} 秒标准", n=n,
                                       seconds=_fmt_s(sec), cmp=cmp, limit=_fmt_s(limit)))
            else:
                slow = sum(1 for k in range(s0, s1) if secs_all[k] > limit)
                if (slow > self.max_count) == over:
                    out.add(ci, -1, -1, -1,
                            render(self, "慢回复 {count} 次（超过 {limit} 秒），允许 {max_count} 次",
                                   count=slow, limit=_fmt_s(limit), max_count=self.max_count))
        return out

    def evaluate(self, conv: Conversation, env: Env) -> list[RuleHit]:
        limit = self.threshold(conv.platform)
        if limit is None or all(t is None for t in conv.ts_ns):
            return []  # N/A: no standard for this platform, or no timestamps (JDDC)
        delays = self._delays(conv, env)
        if not delays:
            return []
        over = self.fire_when == "over"
        if self.metric == "first_response":
            pos, s = delays[0]
            if (s > limit) == over:
                cmp = "超过" if over else "未超过"
                return [RuleHit(pos, 0, len(conv.text[pos]), render(
                    self, "首次人工响应 {seconds} 秒，{cmp} {limit} 秒标准",
                    seconds=_fmt_s(s), cmp=cmp, limit=_fmt_s(limit)))]
            return []
        if self.metric == "reply_delay":
            hits = []
            for n, (pos, s) in enumerate(delays, start=1):
                if (s > limit) == over:
                    hits.append(RuleHit(pos, 0, len(conv.text[pos]), render(
                        self, "第 {n} 次回复等待 {seconds} 秒，{cmp} {limit} 秒标准", n=n,
                        seconds=_fmt_s(s), cmp="超过" if over else "未超过", limit=_fmt_s(limit))))
            return hits
        slow = [s for _, s in delays if s > limit]
        if (len(slow) > self.max_count) == over:
            return [RuleHit(None, explanation=render(
                self, "慢回复 {count} 次（超过 {limit} 秒），允许 {max_count} 次", count=len(slow),
                limit=_fmt_s(limit), max_count=self.max_count))]
        return []


# --- unanswered and partial answers ---------------------------------------------------------

DEFAULT_QUESTION_PATTERNS = [
    r"\?",
    r"吗(?:$|[\s,.!~。])",
    r"(?:怎么|什么|多少|多久|多长时间|哪里|哪个|哪款|几天|几号|几点|能不能|可不可以|可以吗|有没有|是不是|为什么|为啥|如何|啥时候|咋)",
]


class _QuestionRule(RuleBase):
    question_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_QUESTION_PATTERNS))

    @field_validator("question_patterns")
    @classmethod
    def _compile(cls, v: list[str]) -> list[str]:
        return check_regexes(v)

    def question_span(self, env: Env, norm: str) -> tuple[int, int] | None:
        for rx in env.regexes(self.question_patterns):
            m = rx.search(norm)
            if m:
                return m.start(), m.end()
        return None

    def _question_rx(self, env: Env) -> tuple[re.Pattern[str] | None]:
        """The question patterns joined into one regex (None: not joinable), once per rule set."""
        from qa_inspect.ruleengine.matching import _alternation

        return env.compiled(self, "question", lambda: (_alternation(self.question_patterns),))

    def is_question(self, env: Env, text: str) -> bool:
        """``question_span(...) is not None`` with one joined regex (hot in partial_answer)."""
        rx = self._question_rx(env)
        if rx[0] is None:
            return self.question_span(env, text) is not None
        return rx[0].search(text) is not None


class UnansweredRule(_QuestionRule):
    """A customer question with no agent reply before the conversation ends."""

    type: Literal["unanswered"]
    count_bot_replies: bool = False

    def evaluate_split(self, split: Split, cand: np.ndarray, env: Env) -> SplitHits:
        """``evaluate`` of every chat in ``cand`` at once: the buyer messages after each chat's
        last reply, the question test once per distinct text, the first question per chat."""
        n = len(split.conv_of)
        out = SplitHits([], [], [], [], [])
        if not n:
            return out
        reply = split.human_agent
        if self.count_bot_replies:
            role = np.asarray(split.cols["role"], dtype=object)
            reply = reply | (role == "bot") | (role == "agent")
        first = np.asarray(split.first_list, dtype=np.int64)
        last = first - 1  # no reply: every message is after it
        r = np.flatnonzero(reply)
        last[split.conv_of[r]] = r  # in order: each chat's last reply stays
        after = np.arange(n) > last[split.conv_of]
        msgs = np.flatnonzero(split.customer & after & cand[split.conv_of])
        if not len(msgs):
            return out
        codes = split.norm_codes[msgs]
        asks = np.zeros(len(split.norm_uniques), dtype=bool)
        uniq = split.norm_uniques
        for j in np.unique(codes).tolist():
            asks[j] = self.question_span(env, uniq[j]) is not None
        q = msgs[asks[codes]]
        conv = split.conv_of[q]
        keep = np.ones(len(q), dtype=bool)
        keep[1:] = conv[1:] != conv[:-1]  # the first question of each chat
        text = split.cols["text"]
        for m, ci in zip(q[keep].tolist(), conv[keep].tolist(), strict=True):
            out.add(ci, m - int(first[ci]), 0, len(text[m]),
                    render(self, "买家问题「{evidence}」直到会话结束无人回复", evidence=text[m][:40]))
        return out

    def evaluate(self, conv: Conversation, env: Env) -> list[RuleHit]:
        last = -1
        for i in range(len(conv)):
            if conv.is_human_agent(i) or (self.count_bot_replies and conv.role[i] in ("bot", "agent")):
                last = i
        for i in range(last + 1, len(conv)):
            if conv.role[i] != "customer":
                continue
            if self.question_span(env, conv.norm[i]):
                return [RuleHit(i, 0, len(conv.text[i]), render(
                    self, "买家问题「{evidence}」直到会话结束无人回复", evidence=conv.text[i][:40]))]
        return []


_CLAUSE_RE = re.compile(r"[^?!,;:~\n 。、…]+\?*")  # on norm_text: full-width punctuation is folded
_GROUPED = re.compile(r"\\[1-9]|\(\?P[=<]|\(\?<[^=!]|\(\?[aiLmsux]")


class Topic(Strict):
    """What a buyer can ask about (价格, 材质, 发货...): regexes on ``norm_text``."""

    label: str = Field(min_length=1, description="shown in explanations, e.g. 价格")
    ask: list[str] = Field(min_length=1, description="a question clause matching one asks about this topic")
    answer: list[str] = Field(default_factory=list,
                              description="extra patterns that count as covering it in a reply (¥99, 48小时)")

    @field_validator("ask", "answer")
    @classmethod
    def _compile(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            if _GROUPED.search(p):
                raise ValueError(f"pattern {i}: backreferences, named groups and inline flags are not "
                                 "supported in topic patterns (they are joined into one regex)")
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"pattern {i} is not a valid regular expression: {exc}") from None
        return v


class _TopicIndex:
    """All topics of a rule in one regex each for asking and covering: one scan per text."""

    def __init__(self, topics: dict[str, Topic]) -> None:
        self.names = list(topics)
        from qa_inspect.ruleengine.matching import compile_scanning

        self.ask = compile_scanning("|".join(
            f"(?P<t{k}>{'|'.join(f'(?:{p})' for p in t.ask)})" for k, t in enumerate(topics.values())))
        self.cover = compile_scanning("|".join(
            f"(?P<t{k}>{'|'.join(f'(?:{p})' for p in [*t.ask, *t.answer])})"
            for k, t in enumerate(topics.values())))

    def topics(self, rx: re.Pattern[str], text: str) -> frozenset[str]:
        return frozenset(self.names[int(m.lastgroup[1:])] for m in rx.finditer(text) if m.lastgroup)


def _merge_questions(questions: list[list[Any]], asked: Iterable[tuple[frozenset[str], int, int, bool]],
                     pos: int) -> None:
    """Add one buyer message's questions to its turn's: questions that share a topic merge
    (还有优惠吗？多少钱), as [topics, pos, start, end, open]."""
    for topics, s, e, o in asked:
        same = next((q for q in questions if q[0] & topics), None)
        if same is None:
            questions.append([topics, pos, s, e, o])
        else:
            same[0] |= topics
            same[4] = same[4] or o


class PartialAnswerRule(_QuestionRule):
    """多问只答一部分: the buyer asked about two or more topics, the agent's replies covered some
    but not all of them before the buyer asked something new."""

    type: Literal["partial_answer"]
    topics: dict[str, Topic] = Field(description="topic name -> {label, ask, answer} keyword regexes")
    min_questions: int = Field(2, ge=2, description="questions (clauses about different topics) in the buyer's turn")
    max_replies: int = Field(5, ge=1, description="human replies after the question searched for answers")
    joiners: list[str] = Field(
        default_factory=lambda: ["另外", "以及", "顺便问", "还想问", "再问"],
        description="words that join two questions in one clause (split there)")
    open_patterns: list[str] = Field(
        default_factory=lambda: [r"什么|怎么|多少|哪|几|为什么|为啥|如何|多久|多快|多长|多大|啥|咋"],
        description="an open question (多少钱/什么时候) needs an explicit answer; a yes/no one (包邮吗) "
                    "is answered by a bare 是的/有的")
    yes_no_patterns: list[str] = Field(
        default_factory=lambda: [r"^(?:亲+|您好|你好)?[,~\s]*(?:是|有|可以|对|嗯|恩|没|不|会|能|行|支持|当然|肯定)"],
        description="a reply naming no topic that matches one answers every yes/no question of the turn")
    hold_phrases: list[str] = Field(
        default_factory=lambda: ["稍等", "等一下", "查询", "核实", "查一下", "看一下", "查看"],
        description="a reply that puts the buyer on hold is not an answer yet")

    @field_validator("topics")
    @classmethod
    def _enough_topics(cls, v: dict[str, Topic]) -> dict[str, Topic]:
        if len(v) < 2:
            raise ValueError("a partial_answer rule needs at least two topics")
        return v

    @field_validator("joiners", "hold_phrases")
    @classmethod
    def _no_empty(cls, v: list[str]) -> list[str]:
        if any(not w.strip() for w in v):
            raise ValueError("empty phrase")
        return v

    @field_validator("open_patterns", "yes_no_patterns")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        return check_regexes(v)

    def _compiled(self, env: Env) -> tuple[_TopicIndex, re.Pattern[str] | None, list[str]]:
        def build() -> tuple[_TopicIndex, re.Pattern[str] | None, list[str]]:
            from qa_inspect.text.normalize import normalize_text

            joiners = [normalize_text(j) for j in self.joiners]
            split = re.compile("|".join(map(re.escape, sorted(joiners, key=len, reverse=True)))) if joiners else None
            holds = [normalize_text(h) for h in self.hold_phrases]
            return _TopicIndex(self.topics), split, holds

        return env.compiled(self, "compiled", build)

    def asked(self, env: Env, norm: str) -> tuple[tuple[frozenset[str], int, int, bool], ...]:
        """(topics, clause start, clause end, open question) for each question clause of a
        buyer message that names a topic; once per distinct text. Topics named in one clause
        are one question (纯棉四件套多少钱 asks the price, not the material)."""
        memo = env.memo_slot(self, "asked")
        got = memo.get(norm)
        if got is None:
            got = memo[norm] = self._asker(env)(norm)
        return got

    def asked_counts(self, env: Env, texts: list[str]) -> list[int]:
        """``len(self.asked(env, t))`` for each of ``texts`` (memoised the same way): the
        compiled regexes and the memo are looked up once for the batch, not once per text."""
        memo = env.memo_slot(self, "asked")
        ask = self._asker(env)
        out: list[int] = []
        for t in texts:
            got = memo.get(t)
            if got is None:
                got = memo[t] = ask(t)
            out.append(len(got))
        return out

    def _asker(self, env: Env) -> Any:
        """The uncached ``asked`` of one text, with this call's compiled regexes bound."""
        index, joiner, _ = self._compiled(env)
        opens = env.regexes(self.open_patterns)
        ask_search, ask_rx, topics_of = index.ask.search, index.ask, index.topics
        isq = self._question_rx(env)
        q_search = isq[0].search if isq[0] is not None else None

        def is_question(clause: str) -> bool:
            if q_search is not None:
                return q_search(clause) is not None
            return self.question_span(env, clause) is not None

        def ask(norm: str) -> tuple[tuple[frozenset[str], int, int, bool], ...]:
            if not ask_search(norm):  # most messages name no topic at all
                return ()
            out: list[tuple[frozenset[str], int, int, bool]] = []
            # a text without any joiner has none in any clause either (a literal alternation)
            join = joiner if joiner is not None and joiner.search(norm) else None
            for m in _CLAUSE_RE.finditer(norm):
                ms, me = m.start(), m.end()
                if join is None:
                    spans: Any = ((ms, me),)
                else:
                    bounds = [ms, *[j.start() for j in join.finditer(norm, ms, me) if j.start() > ms], me]
                    spans = zip(bounds, bounds[1:], strict=False)
                for s, e in spans:
                    clause = norm[s:e]
                    # no separate ``ask_search`` of the clause: ``topics_of`` is empty whenever
                    # it finds nothing (pure tests, so their order does not change the result)
                    if not is_question(clause):
                        continue
                    topics = topics_of(ask_rx, clause)
                    if topics:
                        out.append((topics, s, e, any(rx.search(clause) for rx in opens)))
            return tuple(out)

        return ask

    def covers(self, env: Env, norm: str) -> tuple[frozenset[str], bool]:
        """(topics a reply names outside questions, starts like a yes/no answer); a hold covers
        nothing."""
        memo = env.memo_slot(self, "covers")
        got = memo.get(norm)
        if got is not None:
            return got
        index, _, holds = self._compiled(env)
        if any(h in norm for h in holds):
            res: tuple[frozenset[str], bool] = (frozenset(), False)
        else:
            # a topic named in a question back (您有把商品给站点配送吗?) is not an answer to it
            topics = frozenset().union(*(index.topics(index.cover, m.group()) for m in _CLAUSE_RE.finditer(norm)
                                         if not self.is_question(env, m.group()))) if index.cover.search(norm) else frozenset()
            res = (topics, any(rx.search(norm) for rx in env.regexes(self.yes_no_patterns)))
        memo[norm] = res
        return res

    def plan(self, split: Split, cand: np.ndarray, env: Env) -> np.ndarray:
        """Only chats whose buyer asked at least ``min_questions`` topic questions in all (a
        turn's questions are a subset of the chat's, so fewer can never fire); ``asked`` runs
        once per distinct buyer text, as ``evaluate`` would."""
        cust = split.customer & cand[split.conv_of]
        per_text = np.zeros(len(split.norm_uniques), dtype=np.int64)
        js = np.unique(split.norm_codes[cust])
        uniq = split.norm_uniques
        per_text[js] = self.asked_counts(env, [uniq[j] for j in js.tolist()])
        # a buyer turn: the messages between two human replies of one chat
        n = len(split.conv_of)
        change = np.ones(n, dtype=bool)
        change[1:] = (split.conv_of[1:] != split.conv_of[:-1]) | split.human_agent[1:]
        turn = np.cumsum(change) - 1
        asked = np.bincount(turn[cust], weights=per_text[split.norm_codes[cust]], minlength=int(turn[-1]) + 1)
        turn_conv = split.conv_of[change]
        ok = np.zeros(len(split), dtype=bool)
        ok[turn_conv[asked >= self.min_questions]] = True
        # for ``evaluate_split``: only these turns can fire (exact for chats in the returned mask)
        split.cache[("partial", id(self))] = (per_text, np.flatnonzero(change), asked >= self.min_questions)
        return cand & ok

    def evaluate_split(self, split: Split, cand: np.ndarray, env: Env) -> SplitHits:
        """``evaluate`` of every chat in ``cand`` (a subset of what ``plan`` returned), turn by
        turn but only over the turns ``plan`` counted enough questions in (a chat of 15
        messages usually has none or one): the same per-turn merge, reply scan and message."""
        per_text, turn_start, enough = split.cache[("partial", id(self))]
        out = SplitHits([], [], [], [], [])
        n_msgs = len(split.conv_of)
        turn_end = np.append(turn_start[1:], n_msgs)
        turn_ci = split.conv_of[turn_start]
        live = np.flatnonzero(enough & cand[turn_ci])
        if not len(live):
            return out
        codes = split.norm_codes
        norm, text, uniq = split.cols["norm"], split.cols["text"], split.norm_uniques
        human = split.human_list
        first = split.first_list
        conv_end = [e for _, e in split.bounds]
        asks = split.customer & (per_text[codes] > 0)  # buyer messages that ask: they end a reply window
        asks_l = asks.tolist()
        asked_memo, covers_memo = env.memo_slot(self, "asked"), env.memo_slot(self, "covers")  # looked up once

        def covers(t: str) -> tuple[frozenset[str], bool]:
            cov = covers_memo.get(t)
            return cov if cov is not None else self.covers(env, t)
        for t_s, t_e, ci in zip(turn_start[live].tolist(), turn_end[live].tolist(), turn_ci[live].tolist(),
                                strict=True):
            questions: list[list[Any]] = []  # [topics, pos, start, end, open], as ``evaluate``
            for i in range(t_s, t_e):
                if not asks_l[i]:
                    continue
                t = uniq[codes[i]]
                got = asked_memo.get(t)  # (``plan`` asked every buyer text of these chats)
                _merge_questions(questions, got if got is not None else self.asked(env, t), i)
            if len(questions) < self.min_questions:
                continue
            anchor, done = self._answered(questions, t_e, conv_end[ci], asks_l, human, norm, covers)
            if anchor is None or all(done) or not any(done):
                continue
            out.add(ci, anchor - first[ci], 0, len(text[anchor]),
                    self._explain(questions, done, text, anchor))
        return out

    def evaluate(self, conv: Conversation, env: Env) -> list[RuleHit]:
        hits: list[RuleHit] = []
        i, n = 0, len(conv)
        role = conv.role
        human = [r == "agent" and not a for r, a in zip(role, conv.auto, strict=True)]
        # every buyer message's questions (memoised per text): looked up once here, not per use
        asked = [self.asked(env, t) if r == "customer" else () for r, t in zip(role, conv.norm, strict=True)]
        while i < n:
            if role[i] != "customer":
                i += 1
                continue
            # the buyer's turn: questions merged when they share a topic (还有优惠吗？多少钱)
            questions: list[list[Any]] = []  # [topics, pos, start, end, open]
            while i < n and not human[i]:
                if role[i] == "customer":
                    _merge_questions(questions, asked[i], i)
                i += 1
            if len(questions) < self.min_questions:
                continue
            anchor, done = self._answered(questions, i, n, asked, human, conv.norm,
                                          lambda t: self.covers(env, t))
            if anchor is None or all(done) or not any(done):
                continue
            hits.append(RuleHit(anchor, 0, len(conv.text[anchor]), self._explain(questions, done, conv.text, anchor)))
        return hits

    def _answered(self, questions: list[list[Any]], k: int, end: int, asks: Sequence[Any], human: Sequence[bool],
                  norm: Sequence[str], covers: Callable[[str], tuple[frozenset[str], bool]]
                  ) -> tuple[int | None, list[bool]]:
        """The answer window after a buyer turn (messages ``k``..``end``): up to ``max_replies``
        human replies, ended by the next buyer message that asks. Returns the first reply that
        covers something (the anchor) and, per question, whether it was answered."""
        wanted = frozenset().union(*(q[0] for q in questions))
        covered: set[str] = set()
        bare_yes, anchor, replies = False, None, 0
        while k < end and replies < self.max_replies:
            if asks[k]:  # only buyer messages ask
                break  # the buyer moved on (or asked again): the answer window is over
            if human[k]:
                replies += 1
                topics, yes = covers(norm[k])
                topics = topics & wanted
                yes = yes and not topics  # 有的，现货充足 answers stock, not every yes/no question
                if topics or yes:
                    covered |= topics
                    bare_yes |= yes
                    anchor = k if anchor is None else anchor
            k += 1
        return anchor, [bool(q[0] & covered) or (bare_yes and not q[4]) for q in questions]

    def _explain(self, questions: list[list[Any]], done: list[bool], text: Sequence[str], anchor: int) -> str:
        names = [self._label(q[0]) for q in questions]
        missed = [q for q, ok in zip(questions, done, strict=True) if not ok]
        pos, s, e = missed[0][1:4]
        return render(
            self, "买家问了{asked}，客服只回应了{covered}，未回应{missed}（「{question}」）",
            asked="、".join(names), covered="、".join(x for x, ok in zip(names, done, strict=True) if ok),
            missed="、".join(self._label(q[0]) for q in missed), question=text[pos][s:e].strip(),
            evidence=text[anchor])

    def _label(self, topics: frozenset[str]) -> str:
        return "/".join(self.topics[t].label for t in self.topics if t in topics)


# --- sequence ----------------------------------------------------------------------------------

class SequenceRule(RuleBase):
    """Customer intent X must be followed by agent act Y within N agent replies."""

    type: Literal["sequence"]
    trigger: MatcherSpec = Field(description="on customer messages")
    response: MatcherSpec = Field(description="on human agent messages")
    within_turns: int = Field(2, ge=1, description="agent replies after the trigger that may respond")
    fire_when: Literal["missing", "followed"] = "missing"
    max_per_conversation: int = Field(1, ge=1)

    def evaluate(self, conv: Conversation, env: Env) -> list[RuleHit]:
        trig, resp = env.matcher(self.trigger), env.matcher(self.response)
        if not trig.patterns and trig.phrases.isdisjoint(env.conversation_found(conv)):
            return []  # no trigger phrase anywhere in the chat
        hits: list[RuleHit] = []
        covered = -1
        for i in conv.customer:
            if i <= covered:
                continue
            t = env.find(trig, conv.norm[i], conv.tokens[i])
            if not t:
                continue
            replies = [j for j in conv.human_agent if j > i][: self.within_turns]
            if not replies:
                continue  # never answered: the unanswered rule speaks to that
            covered = replies[-1]
            answer = None
            for j in replies:
                r = env.find(resp, conv.norm[j], conv.tokens[j])
                if r:
                    answer = (j, r[0])
                    break
            t_start, t_end, _ = t[0]  # hits are (start, end, label)
            trigger_text = conv.text[i][t_start:t_end]
            if self.fire_when == "missing" and answer is None:
                hits.append(RuleHit(i, t_start, t_end, render(
                    self, "买家「{trigger}」后 {n} 次回复内未出现应有回应（{description}）",
                    trigger=trigger_text, n=len(replies), description=self.description)))
            elif self.fire_when == "followed" and answer is not None:
                j, h = answer
                hits.append(RuleHit(j, h[0], h[1], render(
                    self, "买家「{trigger}」后客服回应「{evidence}」", trigger=trigger_text,
                    evidence=conv.text[j][h[0]:h[1]])))
            if len(hits) >= self.max_per_conversation:
                break
        return hits


# --- template (batch-level) ------------------------------------------------------------------

class TemplateRule(RuleBase):
    """Copy-paste replies: the same agent text in many conversations of the shop (or batch).

    A shop's standard greeting or closing is not a problem, so replies containing one of
    ``exclude_phrases`` are neither templates nor counted replies; what remains is a pasted
    blurb standing in for an answer.
    """

    type: Literal["template"]
    min_conversations: int = Field(20, ge=2, description="a text is a template when this many chats use it")
    min_chars: int = Field(8, ge=1, description="shorter replies (好的/在的) never count")
    scope: Literal["shop", "batch"] = Field(
        "shop", description="count conversations of the same shop, or of the whole batch")
    exclude_phrases: list[str] = Field(
        default_factory=list,
        description="replies containing one of these (greetings, closings, holds) never count")
    mode: Literal["message", "conversation"] = "conversation"
    min_share: float = Field(0.8, gt=0, le=1, description="conversation mode: share of template replies")
    min_messages: int = Field(3, ge=1, description="conversation mode: counted replies needed")

    def _excluder(self, env: Env) -> re.Pattern[str] | None:
        def build() -> tuple[re.Pattern[str] | None]:
            from qa_inspect.ruleengine.engine import template_key
            from qa_inspect.text.normalize import normalize_text

            words = sorted({template_key(normalize_text(p)) for p in self.exclude_phrases} - {""},
                           key=len, reverse=True)
            return (re.compile("|".join(map(re.escape, words))),) if words else (None,)

        return env.compiled(self, "excluder", build)[0]

    def _key(self, env: Env, norm: str) -> tuple[bool, str]:
        """(counted, template key) of one reply text, once per distinct text."""
        memo = env.memo_slot(self, "key")
        got = memo.get(norm)
        if got is None:
            from qa_inspect.ruleengine.engine import template_key

            key = template_key(norm)
            rx = self._excluder(env)
            counted = len(key) >= self.min_chars and not (rx is not None and rx.search(key))
            got = memo[norm] = (counted, key)
        return got

    def _count(self, conv: Conversation, env: Env, i: int) -> tuple[bool, int]:
        """(counted, conversations using this reply) for reply ``i``."""
        counted, key = self._key(env, conv.norm[i])
        return counted, env.template_count(key, conv.shop_id, self.scope) if counted else 0

    def plan(self, split: Split, cand: np.ndarray, env: Env) -> np.ndarray:
        """Only chats with at least one template reply (``min_share`` > 0 needs one), judged
        once per distinct (text, shop) pair of human replies."""
        if not env.template_counts:
            return np.zeros(len(split), dtype=bool)
        shop_codes, shops = pd.factorize(pd.Series(split.shops, dtype=object))
        msgs = np.flatnonzero(split.human_agent)
        pair = split.norm_codes[msgs] * max(len(shops), 1) + shop_codes[split.conv_of[msgs]]
        uniq, inverse = np.unique(pair, return_inverse=True)
        inverse = inverse.reshape(-1)
        text_of, shop_of = np.divmod(uniq, max(len(shops), 1))
        # ``_key`` per distinct text, in steps: the template key (shared by the call's template
        # rules), the length test, the batch count, and the exclusion regex only if some reply
        # is long and frequent enough to matter at all
        texts, t_inv = np.unique(text_of, return_inverse=True)
        t_inv = t_inv.reshape(-1)
        keys_of: dict[int, str] = split.cache.setdefault("template_key", {})
        from qa_inspect.ruleengine.engine import shop_template_key, template_key

        uniq_texts = split.norm_uniques
        keys = []
        for j in texts.tolist():
            key = keys_of.get(j)
            if key is None:
                key = keys_of[j] = template_key(uniq_texts[j])
            keys.append(key)
        long_text = np.asarray([len(k) >= self.min_chars for k in keys], dtype=bool)
        pair_n = np.zeros(len(uniq), dtype=np.int64)
        long_pairs = np.flatnonzero(long_text[t_inv])
        shop_names = [str(x) for x in shops]
        counts = env.template_counts
        if self.scope == "shop":
            get = counts.get
            pair_n[long_pairs] = [get(shop_template_key(shop_names[sh], keys[t]), 0) for t, sh in
                                  zip(t_inv[long_pairs].tolist(), shop_of[long_pairs].tolist(), strict=True)]
        else:
            pair_n[long_pairs] = [env.template_count(keys[t], shop_names[sh], self.scope) for t, sh in
                                  zip(t_inv[long_pairs].tolist(), shop_of[long_pairs].tolist(), strict=True)]
        if not np.any(long_text[t_inv] & (pair_n >= self.min_conversations)):
            return np.zeros(len(split), dtype=bool)  # no template reply: nothing can fire
        rx = self._excluder(env)
        counted_text = long_text.copy()
        if rx is not None:
            search = rx.search
            counted_text[[k for k in np.flatnonzero(long_text).tolist() if search(keys[k])]] = False
        pair_counted = counted_text[t_inv]
        pair_n = np.where(pair_counted, pair_n, 0)
        counted_msg, n_msg = pair_counted[inverse], pair_n[inverse]
        templ = counted_msg & (n_msg >= self.min_conversations)
        # (human replies, counted, conversations using it) for ``evaluate_split``
        split.cache[("template", id(self))] = (msgs, counted_msg, n_msg)
        ok = np.zeros(len(split), dtype=bool)
        ok[split.conv_of[msgs[templ]]] = True
        return cand & ok

    def evaluate_split(self, split: Split, cand: np.ndarray, env: Env) -> SplitHits:
        """``evaluate`` of every chat in ``cand`` (a subset of what ``plan`` returned) at once,
        from the per-reply counts ``plan`` found."""
        msgs, counted, n_msg = split.cache[("template", id(self))]
        ci_all = split.conv_of[msgs]
        keep = counted & cand[ci_all]
        m, ci, n = msgs[keep], ci_all[keep], n_msg[keep]
        is_templ = n >= self.min_conversations
        where = "本店" if self.scope == "shop" else "整批"
        first = split.first_list
        out = SplitHits([], [], [], [], [])
        text = split.cols["text"]
        if self.mode == "message":  # every template reply, in order
            expl: dict[int, str] = {}
            for mm, c, k in zip(m[is_templ].tolist(), ci[is_templ].tolist(), n[is_templ].tolist(), strict=True):
                x = expl.get(k)
                if x is None:
                    x = expl[k] = render(self, "回复与{where} {count} 通会话完全相同（模板话术）", count=k, where=where)
                out.add(c, mm - first[c], 0, len(text[mm]), x)
            return out
        # conversation mode: counted replies grouped per (chat, agent), agents in order of
        # their first counted reply, as ``evaluate``'s dict has them
        agent_col = split.cols["agent"]
        codes: dict[str | None, int] = {}
        ac = np.asarray([codes.setdefault(agent_col[x], len(codes)) for x in m.tolist()], dtype=np.int64)
        key = ci * max(len(codes), 1) + ac
        _, first_idx, inv = np.unique(key, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        n_groups = len(first_idx)
        cnt = np.bincount(inv, minlength=n_groups)
        templ = np.bincount(inv[is_templ], minlength=n_groups)
        first_templ = np.full(n_groups, -1, dtype=np.int64)
        t_idx = np.flatnonzero(is_templ)[::-1]
        first_templ[inv[t_idx]] = m[t_idx]  # written last-to-first: each group's first stays
        g_ci = ci[first_idx]
        agents_in_chat = np.bincount(g_ci, minlength=len(split))
        fires = (cnt >= self.min_messages) & (templ / cnt >= self.min_share)
        for g in sorted(np.flatnonzero(fires).tolist(), key=lambda g: int(first_idx[g])):
            c, t, k = int(g_ci[g]), int(templ[g]), int(cnt[g])
            agent = agent_col[int(m[first_idx[g]])]
            solo = agent == split.main_agent(c) or agents_in_chat[c] == 1
            out.add(c, -1 if solo else int(first_templ[g]) - first[c], -1, -1,
                    render(self, "{t}/{c} 条人工回复为{where}批量复用的模板话术（每条 ≥{k} 通会话出现）",
                           t=t, c=k, k=self.min_conversations, where=where))
        return out

    def evaluate(self, conv: Conversation, env: Env) -> list[RuleHit]:
        if not env.template_counts:
            return []
        where = "本店" if self.scope == "shop" else "整批"
        per_agent: dict[str | None, tuple[list[int], list[tuple[int, int]]]] = {}
        for i in conv.human_agent:
            counted, n = self._count(conv, env, i)
            if not counted:
                continue
            cnt, templ = per_agent.setdefault(conv.agent_id[i], ([], []))
            cnt.append(i)
            if n >= self.min_conversations:
                templ.append((i, n))
        if self.mode == "message":
            return [RuleHit(i, 0, len(conv.text[i]), render(
                self, "回复与{where} {count} 通会话完全相同（模板话术）", count=n, where=where))
                for i, n in sorted(t for _, templ in per_agent.values() for t in templ)]
        hits = []
        for agent, (cnt, templ) in per_agent.items():
            if len(cnt) >= self.min_messages and len(templ) / len(cnt) >= self.min_share:
                # the conversation as a whole for its main agent; another agent's share is
                # anchored on their first template reply, so the finding is theirs
                pos = None if agent == conv.main_agent or len(per_agent) == 1 else templ[0][0]
                hits.append(RuleHit(pos, -1, -1, render(
                    self, "{t}/{c} 条人工回复为{where}批量复用的模板话术（每条 ≥{k} 通会话出现）",
                    t=len(templ), c=len(cnt), k=self.min_conversations, where=where)))
        return hits


RULE_TYPES: Registry[type[RuleBase]] = Registry("rule type")
for _name, _cls in (("phrase", PhraseRule), ("regex", RegexRule), ("timing", TimingRule),
                    ("unanswered", UnansweredRule), ("partial_answer", PartialAnswerRule),
                    ("sequence", SequenceRule), ("template", TemplateRule)):
    RULE_TYPES.register(_name, _cls)

MESSAGE_TYPES = frozenset({"phrase", "regex"})
BATCH_TYPES = frozenset({"template"})
