"""``qa-inspect kb``: knowledge-base commands (validate every shop's catalog, policies, FAQ)."""

from __future__ import annotations

import typer

from qa_inspect.cli.common import RulesOpt, call

kb_app = typer.Typer(help="Product knowledge base (rules/knowledge/<shop_id>/): validate and summarise.",
                     no_args_is_help=True)


@kb_app.command("check")
def check(rules: RulesOpt = None) -> None:
    """Validate every shop's knowledge base; print a summary or the first error (file, row, field)."""
    from qa_inspect.knowledge import check_knowledge

    summaries = call(check_knowledge, rules)
    if not summaries:
        typer.echo("no knowledge bases found (rules/knowledge/<shop_id>/)")
        return
    for s in summaries:
        typer.echo(f"{s.shop_id}: {s.products} products, {s.faq} FAQ entries, {s.promotions} promotions — OK")


def register(app: typer.Typer) -> None:
    """Add the ``kb`` group to ``app``."""
    app.add_typer(kb_app, name="kb")
