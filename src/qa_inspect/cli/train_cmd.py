"""``qa-inspect train acts|risk``: fit a model, write model.joblib + card.json, print metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qa_inspect.cli.common import RulesOpt, call

train_app = typer.Typer(help="Train the dialogue-act or dissatisfaction-risk model.", no_args_is_help=True)

DataOpt = Annotated[list[Path], typer.Option("--data", help="Training data; repeat for several files.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder to write model.joblib and card.json into "
                                      "(e.g. models/acts). Never commit models trained on research data.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="random_state for folds and estimators.")]
FoldsOpt = Annotated[int, typer.Option("--folds", help="Cross-validation folds for the card's metrics.")]


@train_app.command("acts")
def train_acts_cmd(data: DataOpt, out: OutOpt, seed: SeedOpt = 0, folds: FoldsOpt = 5) -> None:
    """Train the agent dialogue-act classifier from labelled CSVs (columns: text, labels "a|b", optional group)."""
    from qa_inspect.models.train import train_act_model

    res = call(train_act_model, data, out, random_state=seed, folds=folds)
    typer.echo(res.metrics.to_string(index=False))
    typer.echo(f"wrote {res.out_dir}/model.joblib and card.json")


@train_app.command("risk")
def train_risk_cmd(
    data: DataOpt,
    out: OutOpt,
    labels: Annotated[Path | None, typer.Option("--labels", help="CSV with conversation_id,target "
                                                "(higher = more dissatisfied). Not needed for STC-3 json.")] = None,
    acts_model: Annotated[Path | None, typer.Option("--acts-model", help="Act model folder for act "
                                                    "features (default: the shipped one).")] = None,
    no_acts: Annotated[bool, typer.Option("--no-acts", help="Do not use act probabilities as features.")] = False,
    stc3_target: Annotated[str, typer.Option("--stc3-target", help="STC-3 target: S (-mean S) or SAE "
                                             "(-mean of S, A, E).")] = "S",
    rules: RulesOpt = None,
    seed: SeedOpt = 0,
    folds: FoldsOpt = 5,
) -> None:
    """Train the conversation dissatisfaction-risk model from chats plus a labels table (or STC-3 json)."""
    from qa_inspect.models.train import train_risk_model

    res = call(train_risk_model, data, out, rules_dir=rules, labels=labels, acts_model=acts_model,
               use_acts=not no_acts, stc3_target=stc3_target, random_state=seed, folds=folds)
    typer.echo(res.metrics.to_string(index=False))
    typer.echo(f"wrote {res.out_dir}/model.joblib and card.json")


def register(app: typer.Typer) -> None:
    """Add ``train acts`` and ``train risk``."""
    app.add_typer(train_app, name="train")
