"""``qa-inspect rules check``: validate every rule file and run every rule's examples.

Examples are executable documentation: ``fail`` examples must make the rule fire and ``pass``
examples must not. A string is one message in the rule's ``applies_to.role``; a list of lines
(or ``{dialogue: [...], platform:, start:, repeat:}``) is a short dialogue:

    "买家: 太贵了"            "@245 客服: 在的"  (seconds after the shop-local start time)
    "机器人: 【自动回复】..."   "下单: 订单已提交"  (system event rows: 下单/付款/退款)
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from qa_inspect import schema
from qa_inspect.config import BusinessHours, Shop, resolve_rules_dir
from qa_inspect.errors import ConfigError
from qa_inspect.ruleengine.engine import Env, run_rules, template_counts
from qa_inspect.ruleengine.ruleset import RuleSet, collect_ruleset
from qa_inspect.ruleengine.spec import DialogueExample, Example, RuleBase
from qa_inspect.ruleengine.types import BATCH_TYPES, MESSAGE_TYPES
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, tokenize

LINE_RE = re.compile(r"^\s*(?:@(\d+(?:\.\d+)?)s?\s+)?([^:：\s]+)\s*[:：]\s?(.*)$", re.S)
ROLE_WORDS: dict[str, tuple[str, bool, str | None]] = {
    "买家": ("customer", False, None), "顾客": ("customer", False, None), "客户": ("customer", False, None),
    "買家": ("customer", False, None), "buyer": ("customer", False, None),
    "customer": ("customer", False, None),
    "客服": ("agent", False, None), "agent": ("agent", False, None),
    "机器人": ("bot", True, None), "自动回复": ("bot", True, None), "bot": ("bot", True, None),
    "系统": ("system", False, None), "system": ("system", False, None),
    "下单": ("system", False, "order"), "付款": ("system", False, "payment"),
    "退款": ("system", False, "refund"),
}
EXAMPLE_DAY = "2026-11-23"


def example_shop_id(platform: str) -> str:
    return f"example_{platform}"


def example_shops() -> dict[str, Shop]:
    """One example shop per platform (shopee shops keep Taipei time), default business hours."""
    return {example_shop_id(p): Shop(shop_id=example_shop_id(p), name="示例店铺", platform=p,  # type: ignore[arg-type]
                                     timezone="Asia/Taipei" if p == "shopee" else "Asia/Shanghai",
                                     business_hours=BusinessHours())
            for p in schema.PLATFORMS}


class ExampleError(ValueError):
    """An example that cannot be turned into messages (bad line)."""


def example_messages(rule: RuleBase, example: Example, conversation_id: str = "ex") -> tuple[
        pd.DataFrame, DialogueExample]:
    """Messages (schema.MESSAGE_COLUMNS) for one example, and its dialogue settings."""
    if isinstance(example, str):
        if rule.type not in MESSAGE_TYPES:
            raise ExampleError(f"a '{rule.type}' rule needs dialogue examples (a list of '买家: ...' lines)")
        who = "客服" if rule.applies_to.role == "agent" else "买家"
        ex = DialogueExample(dialogue=[f"{who}: {example}"])
    elif isinstance(example, list):
        ex = DialogueExample(dialogue=example)
    else:
        ex = example
    tz = ZoneInfo("Asia/Taipei" if ex.platform == "shopee" else "Asia/Shanghai")
    t0 = datetime.fromisoformat(f"{EXAMPLE_DAY}T{ex.start}:00").replace(tzinfo=tz)
    rows: list[dict[str, Any]] = []
    timed = any(LINE_RE.match(x) and LINE_RE.match(x).group(1) for x in ex.dialogue)  # type: ignore[union-attr]
    last = 0.0
    for j, line in enumerate(ex.dialogue):
        m = LINE_RE.match(line)
        if not m or m.group(2) not in ROLE_WORDS:
            raise ExampleError(f"line {j}: expected '[@seconds] 买家|客服|机器人|系统|下单|付款: text', got {line!r}")
        if m.group(1):
            last = float(m.group(1))
        role, auto, event = ROLE_WORDS[m.group(2)]
        try:
            ts = pd.Timestamp(t0 + timedelta(seconds=last)).tz_convert("UTC") if timed else pd.NaT
        except (OverflowError, ValueError):  # "@99999999999 客服: ..." is past any real date
            raise ExampleError(f"line {j}: @{m.group(1)} seconds is too large") from None
        rows.append({
            schema.PLATFORM: ex.platform, schema.SHOP_ID: example_shop_id(ex.platform),
            schema.CONVERSATION_ID: f"{example_shop_id(ex.platform)}:{conversation_id}", schema.SEQ: j, schema.TS: ts,
            schema.ROLE: role, schema.AGENT_ID: "示例客服", schema.CUSTOMER_ID: "示例买家",
            schema.TEXT: m.group(3), schema.SKU: None, schema.IS_AUTO_REPLY: auto, schema.EVENT: event,
            schema.AMOUNT: None, schema.SOURCE_FILE: "example", schema.SOURCE_LINE: j + 1,
        })
    df = pd.DataFrame(rows, columns=list(schema.MESSAGE_COLUMNS))
    df[schema.TS] = pd.to_datetime(df[schema.TS], utc=True)
    return df, ex


def run_example(ruleset: RuleSet, rule: RuleBase, example: Example, tokenizer: Tokenizer,
                env: Env | None = None) -> pd.DataFrame:
    """Findings of ``rule`` alone on one example (empty frame = the rule did not fire).

    ``env`` (``Env(ruleset, example_shops())``) may be passed to reuse compiled matchers.
    """
    msgs, ex = example_messages(rule, example)
    part = tokenize(normalize(msgs), tokenizer)
    if env is None:
        env = Env(ruleset, example_shops())
    if rule.type in BATCH_TYPES:
        env = env.derive(Counter({k: v * ex.repeat for k, v in template_counts(part).items()}))
    # The whole rule set's phrase index, as in production: nested phrases behave the same.
    return run_rules(part, [rule], env)


@dataclass
class CheckProblem:
    file: str | None
    rule_id: str | None
    key_path: str | None
    message: str

    def __str__(self) -> str:
        return ": ".join(p for p in (self.file, f"rule {self.rule_id}" if self.rule_id else None,
                                     self.key_path, self.message) if p)


@dataclass
class CheckReport:
    rules_dir: Path
    version: str = ""
    files: list[str] = field(default_factory=list)
    n_rules: int = 0
    n_examples: int = 0
    n_passed: int = 0
    problems: list[CheckProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [f"rule set {self.rules_dir} (version {self.version}): {len(self.files)} files, "
                 f"{self.n_rules} rules, {self.n_passed}/{self.n_examples} examples behave as documented"]
        lines += [f"FAIL {p}" for p in self.problems]
        lines.append("OK" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join(lines)


def _bare_message(err: ConfigError) -> str:
    """The message of a ConfigError without its 'file: rule X: key path: ' prefix."""
    full = str(err)
    prefix = ": ".join(p for p in (err.file, f"rule {err.rule_id}" if err.rule_id else None, err.key_path) if p)
    return full[len(prefix) + 2:] if prefix and full.startswith(prefix + ": ") else full


def _example_text(example: Example) -> str:
    if isinstance(example, str):
        return example
    lines = example if isinstance(example, list) else example.dialogue
    return " / ".join(lines)


def check_rules(rules_dir: Path | str | None = None, tokenizer: Tokenizer | None = None) -> CheckReport:
    """Validate all rule files (all errors, not just the first) and run every example.

    ``rules_dir`` None = the default rules folder ($QA_INSPECT_RULES or the bundled rules/).
    """
    rules_dir = resolve_rules_dir(rules_dir)
    ruleset, errors = collect_ruleset(rules_dir)
    report = CheckReport(rules_dir, ruleset.version, [str(f) for f in ruleset.files], len(ruleset.rules))
    report.problems += [CheckProblem(e.file, e.rule_id, e.key_path, _bare_message(e)) for e in errors]
    if not ruleset.rules and not errors:
        report.problems.append(CheckProblem(str(rules_dir), None, None, "no rules found"))
    tok = tokenizer or Tokenizer.from_rules(rules_dir)
    env = Env(ruleset, example_shops())
    for rule in ruleset.rules:
        file, idx = ruleset.source.get(rule.id, (None, -1))
        for kind, examples, should_fire in (("fail", rule.examples.fail, True),
                                            ("pass", rule.examples.pass_, False)):
            for j, ex in enumerate(examples):
                report.n_examples += 1
                where = f"rules[{idx}].examples.{kind}[{j}]"
                try:
                    fired = not run_example(ruleset, rule, ex, tok, env).empty
                except (ExampleError, ConfigError) as exc:
                    report.problems.append(CheckProblem(file, rule.id, where, str(exc)))
                    continue
                if fired == should_fire:
                    report.n_passed += 1
                else:
                    verb = "did not fire" if should_fire else "fired"
                    report.problems.append(CheckProblem(
                        file, rule.id, where, f"{verb} on {kind} example: {_example_text(ex)}"))
    return report
