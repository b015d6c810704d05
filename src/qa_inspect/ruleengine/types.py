"""Rule types: the YAML parameters of each type and how it evaluates a conversation.

The registry ``RULE_TYPES`` maps the ``type:`` of a rule to its class; it is filled here, in
one place, and nothing else registers into it. Each class's ``evaluate(conv, env)`` returns
``RuleHit``s; the engine turns them into finding records. Types never read global state:
shops, thresholds and batch counts all come in through ``env`` or the rule's own fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import pandas as pd
from pydantic import Field, field_validator, model_validator

from qa_inspect.config import BusinessHours, Shop
from qa_inspect.registry import Registry
from qa_inspect.ruleengine.conversation import Conversation
from qa_inspect.ruleengine.spec import MatcherSpec, RuleBase

if TYPE_CHECKING:
    from qa_inspect.ruleengine.engine import Env


@dataclass(frozen=True)
class RuleHit:
    """One firing: position in the conversation (None = whole conversation) and a span."""

    pos: int | None
    start: int = -1
    end: int = -1
    explanation: str = ""


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

    def evaluate(self, conv: Conversation, env: Env) -> list[RuleHit]:
        matcher = env.matcher(self)
        cands = self.candidates(conv)
        if not cands:
            return []  # nothing to judge: N/A
        # None of the rule's phrases anywhere in the chat (one set test): no candidate can hit.
        hopeless = not matcher.patterns and matcher.phrases.isdisjoint(env.conversation_found(conv))
        hits: list[RuleHit] = []
        for i in () if hopeless else cands:
            found = env.find(matcher, conv.norm[i], conv.tokens[i])
            if not found:
                continue
            if self.match == "absent":
                return []
            labels = "、".join(dict.fromkeys(h.label for h in found))
            h = found[0]
            ev = conv.text[i][h.start:h.end]
            hits.append(RuleHit(i, h.start, h.end, render(
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
    shop = shops.get(conv.shop_id)
    if shop is not None:
        return ZoneInfo(shop.timezone), shop.business_hours
    tz = "Asia/Taipei" if conv.platform == "shopee" else "Asia/Shanghai"
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
        tz, hours = _shop_clock(conv, env.shops)
        out: list[tuple[int, float]] = []
        waiting: int | None = None
        for i in range(len(conv)):
            if conv.role[i] == "customer" and waiting is None:
                waiting = i
            elif conv.is_human_agent(i) and waiting is not None:
                t0, t1 = conv.ts_ns[waiting], conv.ts_ns[i]
                if t0 is not None and t1 is not None:
                    start = (clock_start(pd.Timestamp(t0, tz="UTC"), tz, hours).value
                             if self.business_hours_only else t0)
                    out.append((i, max(0.0, (t1 - start) / 1e9)))
                waiting = None
        conv.extra[key] = out
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
        for i, p in enumerate(v):
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"pattern {i} is not a valid regular expression: {exc}") from None
        return v

    def question_span(self, env: Env, norm: str) -> tuple[int, int] | None:
        for rx in env.regexes(self.question_patterns):
            m = rx.search(norm)
            if m:
                return m.start(), m.end()
        return None


class UnansweredRule(_QuestionRule):
    """A customer question with no agent reply before the conversation ends."""

    type: Literal["unanswered"]
    count_bot_replies: bool = False

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


_CLAUSE_RE = re.compile(r"[^?。!,;\n ]+\??")


class PartialAnswerRule(_QuestionRule):
    """A multi-part question answered by a very short reply (likely only one part answered)."""

    type: Literal["partial_answer"]
    min_questions: int = Field(2, ge=2)
    max_reply_chars: int = Field(8, ge=1)
    ignore_clauses: list[str] = Field(
        default_factory=lambda: ["你好", "您好", "在吗", "在不在", "亲", "人呢", "有人吗", "客服"],
        description="greetings that look like questions but ask nothing")
    open_patterns: list[str] = Field(
        default_factory=lambda: [r"什么|怎么|多少|哪|几|为什么|为啥|如何|还是|多久|多长"],
        description="at least one clause must be an open question; yes/no-only pairs are usually "
                    "one question asked twice, which 是的 fully answers")
    hold_phrases: list[str] = Field(
        default_factory=lambda: ["稍等", "等一下", "查询", "核实", "查一下", "看一下", "查看"],
        description="a reply that puts the buyer on hold is not an answer yet")

    def evaluate(self, conv: Conversation, env: Env) -> list[RuleHit]:
        hits: list[RuleHit] = []
        i, n = 0, len(conv)
        while i < n:
            if conv.role[i] != "customer":
                i += 1
                continue
            turn = []
            while i < n and conv.role[i] != "agent":
                if conv.role[i] == "customer":
                    turn.append(i)
                i += 1
            reply = []
            while i < n and conv.role[i] != "customer":
                if conv.is_human_agent(i):
                    reply.append(i)
                i += 1
            if not reply:
                continue
            ignore = set(self.ignore_clauses)
            clauses = {c.strip() for j in turn for c in _CLAUSE_RE.findall(conv.norm[j])}
            questions = [c for c in clauses if len(c) >= 3 and c.rstrip("?") not in ignore
                         and self.question_span(env, c)]
            asked = len(questions)
            if not any(rx.search(c) for c in questions for rx in env.regexes(self.open_patterns)):
                asked = 0
            reply_norm = " ".join(conv.norm[j].strip() for j in reply)
            chars = len(reply_norm)
            answering = not self.question_span(env, reply_norm) and not any(
                h in reply_norm for h in self.hold_phrases)
            if asked >= self.min_questions and chars <= self.max_reply_chars and answering:
                p = reply[0]
                hits.append(RuleHit(p, 0, len(conv.text[p]), render(
                    self, "买家一次问了 {asked} 个问题，客服只回复「{evidence}」", asked=asked,
                    evidence=" ".join(conv.text[j] for j in reply))))
        return hits


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
            trigger_text = conv.text[i][t[0].start:t[0].end]
            if self.fire_when == "missing" and answer is None:
                hits.append(RuleHit(i, t[0].start, t[0].end, render(
                    self, "买家「{trigger}」后 {n} 次回复内未出现应有回应（{description}）",
                    trigger=trigger_text, n=len(replies), description=self.description)))
            elif self.fire_when == "followed" and answer is not None:
                j, h = answer
                hits.append(RuleHit(j, h.start, h.end, render(
                    self, "买家「{trigger}」后客服回应「{evidence}」", trigger=trigger_text,
                    evidence=conv.text[j][h.start:h.end])))
            if len(hits) >= self.max_per_conversation:
                break
        return hits


# --- template (batch-level) ------------------------------------------------------------------

class TemplateRule(RuleBase):
    """Copy-paste replies: agent texts reused across many conversations of the whole batch."""

    type: Literal["template"]
    min_conversations: int = Field(20, ge=2, description="a text is a template when this many chats use it")
    min_chars: int = Field(8, ge=1, description="shorter replies (好的/在的) never count")
    mode: Literal["message", "conversation"] = "conversation"
    min_share: float = Field(0.8, gt=0, le=1, description="conversation mode: share of template replies")
    min_messages: int = Field(3, ge=1, description="conversation mode: counted replies needed")

    def evaluate(self, conv: Conversation, env: Env) -> list[RuleHit]:
        counts = env.template_counts
        if counts is None:
            return []
        from qa_inspect.ruleengine.engine import template_key

        counted, templ = [], []
        for i in conv.human_agent:
            key = template_key(conv.norm[i])
            if len(key) < self.min_chars:
                continue
            counted.append(i)
            if counts.get(key, 0) >= self.min_conversations:
                templ.append(i)
        if self.mode == "message":
            return [RuleHit(i, 0, len(conv.text[i]), render(
                self, "回复与 {count} 通会话完全相同（模板话术）",
                count=counts.get(template_key(conv.norm[i]), 0))) for i in templ]
        if len(counted) >= self.min_messages and len(templ) / len(counted) >= self.min_share:
            return [RuleHit(None, explanation=render(
                self, "{t}/{c} 条人工回复为批量复用的模板话术（每条 ≥{k} 通会话出现）",
                t=len(templ), c=len(counted), k=self.min_conversations))]
        return []


RULE_TYPES: Registry[type[RuleBase]] = Registry("rule type")
for _name, _cls in (("phrase", PhraseRule), ("regex", RegexRule), ("timing", TimingRule),
                    ("unanswered", UnansweredRule), ("partial_answer", PartialAnswerRule),
                    ("sequence", SequenceRule), ("template", TemplateRule)):
    RULE_TYPES.register(_name, _cls)

MESSAGE_TYPES = frozenset({"phrase", "regex"})
BATCH_TYPES = frozenset({"template"})
