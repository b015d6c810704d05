"""The ``qa-inspect`` command. Thin: parse arguments, call one library function, map errors.

Each command group lives in its own module with a ``register(app)`` function; they are
listed here explicitly (no plugin discovery) so the command set is visible in one place.
"""

from __future__ import annotations

from typing import Annotated

import typer

from qa_inspect import __version__
from qa_inspect.cli import ingest_cmd, kb_cmd, report_cmd, rules_cmd, run_cmd, train_cmd

app = typer.Typer(
    name="qa-inspect",
    help="客服质检 — audit e-commerce customer-service chats: import exports, score every "
    "conversation with rules, product knowledge and trained models, and write reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qa-inspect {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """客服质检 — quality inspection of customer-service chats."""


for _module in (ingest_cmd, rules_cmd, kb_cmd, train_cmd, run_cmd, report_cmd):
    _module.register(app)


def main() -> None:
    app()
