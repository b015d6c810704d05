"""Per-rule statistics over a batch: how often each rule fires, where rules overlap or conflict.

A supervisor tuning a rule set asks: does this rule fire at all, on how many chats, does it
always fire together with another rule (redundant), and does it fire on the same message as a
rule of the opposite polarity (contradictory rules)? ``rule_stats`` answers those on a batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from qa_inspect import schema
from qa_inspect.config import Shop, load_shops, resolve_rules_dir
from qa_inspect.errors import UsageError
from qa_inspect.ruleengine.engine import apply_rules, apply_template_rules, ruleset_words, template_counts
from qa_inspect.ruleengine.ruleset import RuleSet, load_ruleset
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, tokenize

STATS_COLUMNS = ("rule_id", "name", "type", "dimension", "polarity", "severity", "hits", "conversations",
                 "coverage", "overlap", "conflicts", "samples")
FORMATS = ("table", "csv", "json")


def prepare(messages: pd.DataFrame, ruleset: RuleSet, tokenizer: Tokenizer | None = None) -> pd.DataFrame:
    """Add norm_text/tokens when missing (with the rule phrases in the tokenizer dictionary)."""
    out = messages
    if schema.NORM_TEXT not in out.columns:
        out = normalize(out)
    if schema.TOKENS not in out.columns:
        if tokenizer is None:
            tokenizer = (Tokenizer.from_rules(ruleset.rules_dir) if ruleset.rules_dir
                         else Tokenizer(words=[(w, None, None) for w in ruleset_words(ruleset)]))
        out = tokenize(out, tokenizer)
    return out


def rule_stats(messages: pd.DataFrame, ruleset: RuleSet, shops: Mapping[str, Shop], *,
               tokenizer: Tokenizer | None = None, n_samples: int = 3,
               return_findings: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """One row per rule (STATS_COLUMNS) over all conversations of ``messages``.

    ``coverage`` = share of conversations hit; ``overlap`` = the rules most often firing in the
    same conversations ("ATT-002:12"); ``conflicts`` = messages where this rule and a rule of the
    opposite polarity both fire (e.g. 共情 + and 禁用语 - on one reply). Template rules use this batch's counts.
    """
    part = prepare(messages, ruleset, tokenizer)
    findings = pd.concat([apply_rules(part, ruleset, shops),
                          apply_template_rules(part, ruleset, template_counts(part), shops)],
                         ignore_index=True)
    n_conv = int(part[schema.CONVERSATION_ID].nunique()) if len(part) else 0
    convs_by_rule: dict[str, set[str]] = {
        rid: set(g[schema.CONVERSATION_ID]) for rid, g in findings.groupby(schema.RULE_ID)}
    msg = findings[findings[schema.MESSAGE_INDEX] >= 0]
    conflicts: Counter[str] = Counter()
    for _, g in msg.groupby([schema.CONVERSATION_ID, schema.MESSAGE_INDEX]):
        if g[schema.POLARITY].nunique() > 1:
            for rid in g[schema.RULE_ID].unique():
                conflicts[rid] += 1
    rows = []
    for rule in ruleset.rules:
        f = findings[findings[schema.RULE_ID] == rule.id]
        convs = convs_by_rule.get(rule.id, set())
        co = Counter({other: len(convs & c) for other, c in convs_by_rule.items() if other != rule.id})
        overlap = ", ".join(f"{r}:{n}" for r, n in co.most_common(3) if n)
        ev = [e or x for e, x in zip(f[schema.EVIDENCE], f[schema.EXPLANATION], strict=False)]
        rows.append({
            "rule_id": rule.id, "name": rule.name, "type": rule.type, "dimension": rule.dimension,
            "polarity": rule.polarity, "severity": rule.severity, "hits": len(f),
            "conversations": len(convs), "coverage": round(len(convs) / n_conv, 4) if n_conv else 0.0,
            "overlap": overlap, "conflicts": conflicts.get(rule.id, 0),
            "samples": " | ".join(dict.fromkeys(str(e)[:40] for e in ev))[:200] if n_samples else "",
        })
        if n_samples and rows[-1]["samples"]:
            rows[-1]["samples"] = " | ".join(list(dict.fromkeys(str(e)[:40] for e in ev))[:n_samples])
    stats = pd.DataFrame(rows, columns=list(STATS_COLUMNS))
    return (stats, findings) if return_findings else stats


def format_stats(stats: pd.DataFrame, fmt: str = "table") -> str:
    if fmt == "csv":
        return stats.to_csv(index=False)
    if fmt == "json":
        return stats.to_json(orient="records", force_ascii=False, indent=1)
    with pd.option_context("display.max_rows", 500, "display.width", 250, "display.max_colwidth", 60):
        return stats.to_string(index=False)


def stats_report(paths: Sequence[Path | str], *, rules_dir: Path | str | None = None, fmt: str = "table",
                 input_format: str | None = None) -> str:
    """``qa-inspect rules stats``: ingest ``paths``, run the rule set, render the per-rule table."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    from qa_inspect.ingest import ingest_paths  # the ingest stage; imported late to keep this light

    rdir = resolve_rules_dir(rules_dir)
    ruleset = load_ruleset(rdir)
    result = ingest_paths([Path(p) for p in paths], rules_dir=rdir, fmt=input_format)
    stats = rule_stats(result.messages, ruleset, load_shops(rdir))
    assert isinstance(stats, pd.DataFrame)
    n = result.messages[schema.CONVERSATION_ID].nunique() if len(result.messages) else 0
    head = "" if fmt != "table" else (f"rule set {ruleset.version}: {len(ruleset.rules)} rules over "
                                      f"{len(result.messages)} messages, {n} conversations\n")
    return head + format_stats(stats, fmt)
