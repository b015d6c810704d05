"""``qa-inspect rules check|stats``: thin wrappers over qa_inspect.ruleengine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qa_inspect.cli.common import RulesOpt, call
from qa_inspect.ruleengine.check import check_rules
from qa_inspect.ruleengine.stats import stats_report

rules_app = typer.Typer(name="rules", help="Validate rule sets and measure how they fire on chat exports.",
                        no_args_is_help=True)


@rules_app.command("check")
def check(rules: RulesOpt = None) -> None:
    """Validate every rule file and run each rule's pass/fail examples (exit 1 on any failure)."""
    report = call(check_rules, rules)
    typer.echo(report.render(), err=not report.ok)
    if not report.ok:
        raise typer.Exit(1)


@rules_app.command("stats")
def stats(
    paths: Annotated[list[Path], typer.Argument(help="Chat export files or folders to ingest.")],
    rules: RulesOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="Output format: table, csv or json.")] = "table",
    input_format: Annotated[str | None, typer.Option("--input-format", help="Force an importer (csv, tsv, "
                                                     "xlsx, jsonl, qianniu, jddc, ...). Default: detect.")] = None,
) -> None:
    """Per rule: hits, share of conversations hit, overlap with other rules, conflicts, samples."""
    typer.echo(call(stats_report, paths, rules_dir=rules, fmt=fmt, input_format=input_format))


def register(app: typer.Typer) -> None:
    """Add the ``rules`` group to ``app``."""
    app.add_typer(rules_app, name="rules")
