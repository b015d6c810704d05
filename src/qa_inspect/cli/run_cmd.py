"""``run``, ``sample``, ``coach``, ``review import`` and ``calibrate``: thin wrappers over the
pipeline, selection and calibration modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qa_inspect.cli.common import RulesOpt, call
from qa_inspect.pipeline import DEFAULT_PARTITION, Reporter, run_audit

DbOpt = Annotated[Path | None, typer.Option("--db", help="DuckDB store file. Default: DIR/qa.duckdb of --out.")]


def _print_frame(df: object, columns: list[str]) -> None:
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    if df.empty:
        typer.echo("(nothing)")
        return
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        typer.echo(df[[c for c in columns if c in df.columns]].to_string(index=False))


def register(app: typer.Typer) -> None:
    """Add the run/selection/calibration commands to ``app``."""

    @app.command("run")
    def run(
        paths: Annotated[list[Path], typer.Argument(help="Chat export files or folders of one or more nights.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: CSV/Parquet outputs, reports/, "
                                          "and the store qa.duckdb unless --db is given.")],
        rules: RulesOpt = None,
        models: Annotated[Path | None, typer.Option("--models", help="Trained models folder (acts/ and/or "
                                                    "risk/). Default: the shipped act model, no risk "
                                                    "model.")] = None,
        db: DbOpt = None,
        workers: Annotated[int, typer.Option("--workers", "-j", help="Worker processes for the pool engine "
                                             "(1 = in this process).")] = 1,
        engine: Annotated[str | None, typer.Option("--engine", help="Execution engine: local, pool or dask. "
                                                   "Default: dask with --dask, pool with --workers > 1, "
                                                   "else local.")] = None,
        dask: Annotated[str | None, typer.Option("--dask", help="Scheduler address of an existing "
                                                 "dask.distributed cluster (e.g. tcp://host:8786); "
                                                 "selects the dask engine.")] = None,
        partition_size: Annotated[int, typer.Option("--partition-size", help="Conversations per "
                                                    "partition.")] = DEFAULT_PARTITION,
        no_reports: Annotated[bool, typer.Option("--no-reports", help="Skip rendering HTML "
                                                 "reports.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log lines, only the "
                                            "summary.")] = False,
    ) -> None:
        """The nightly audit: import, score, store, write outputs and reports. Exit 0 ok, 1 user error
        (bad input/config, output folder locked), 2 contradictory or unknown engine options, 3 internal
        error. Ends with one line of seconds per stage (also in run_summary.json)."""
        summary = call(run_audit, paths, out, rules_dir=rules, models_dir=models, db=db, workers=workers,
                       partition_size=partition_size, reporter=Reporter(quiet=quiet), render=not no_reports,
                       engine=engine, dask_address=dask)
        typer.echo(summary.text())
        typer.echo(summary.stage_text())

    @app.command("sample")
    def sample(
        per_agent: Annotated[int, typer.Option("--per-agent", "-n", help="Conversations per agent.")] = 5,
        seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same "
                                          "picks.")] = 0,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder: reads DIR/qa.duckdb "
                                                 "(unless --db) and writes DIR/sample.csv.")] = None,
        db: DbOpt = None,
        night: Annotated[list[str] | None, typer.Option("--night", help="Only these nights (YYYY-MM-DD); "
                                                        "repeatable.")] = None,
    ) -> None:
        """抽检: a reproducible random sample per agent, stratified by grade band."""
        from qa_inspect.selection import sample_from_store

        picks, path = call(sample_from_store, db, per_agent=per_agent, seed=seed, out_dir=out, nights=night)
        _print_frame(picks, ["agent_id", "conversation_id", "night", "grade", "total"])
        if path:
            typer.echo(f"wrote {path}")

    @app.command("coach")
    def coach(
        agent: Annotated[str, typer.Option("--agent", "-a", help="Agent id (as in conversations.csv).")],
        dimension: Annotated[str | None, typer.Option("--dimension", "-d", help="product_knowledge, selling, "
                                                      "attitude or responsiveness. Default: the agent's "
                                                      "weakest.")] = None,
        n: Annotated[int, typer.Option("-n", help="Number of conversations.")] = 10,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder: reads DIR/qa.duckdb "
                                                 "(unless --db) and writes coach_<id>.csv there.")] = None,
        db: DbOpt = None,
    ) -> None:
        """Conversations that best show an agent's weakest items, with the evidence."""
        from qa_inspect.selection import coach_from_store

        picks, path = call(coach_from_store, db, agent_id=agent, dimension=dimension, n=n, out_dir=out)
        _print_frame(picks, ["conversation_id", "dimension", "points_lost", "score", "evidence"])
        if path:
            typer.echo(f"wrote {path}")

    review = typer.Typer(help="Human reviews (质检复核) of automatic scores.", no_args_is_help=True)
    app.add_typer(review, name="review")

    @review.command("import")
    def review_import(
        file: Annotated[Path, typer.Argument(help="reviews.csv: conversation_id, reviewer, total and/or "
                                             "score_<dimension>, grade, verdict, override, comment.")],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder holding "
                                                 "qa.duckdb.")] = None,
        db: DbOpt = None,
    ) -> None:
        """Store reviews; rows with override=true replace the automatic total in later outputs."""
        from qa_inspect.calibration import import_reviews

        res = call(import_reviews, db, file, out_dir=out)
        typer.echo(f"imported {res.imported} reviews ({res.overrides} overrides)")
        if res.unknown_ids:
            typer.echo(f"skipped {len(res.unknown_ids)} unknown conversation ids: {res.unknown_ids[:10]}", err=True)

    @app.command("calibrate")
    def calibrate(
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder: reads DIR/qa.duckdb "
                                                 "(unless --db) and writes calibration_*.csv.")] = None,
        db: DbOpt = None,
        rules: RulesOpt = None,
        min_hits: Annotated[int, typer.Option("--min-hits", help="Reviewed hits a rule needs before its "
                                              "disagreement is ranked.")] = 3,
    ) -> None:
        """Agreement between automatic and human scores (MAE, Spearman, kappa) and disputed rules."""
        from qa_inspect.calibration import calibrate as run_calibration

        rep = call(run_calibration, db, rules_dir=rules, out_dir=out, min_hits=min_hits)
        typer.echo(f"{rep.n_reviewed} reviewed conversations")
        _print_frame(rep.agreement.round(3), ["measure", "n", "mae", "bias", "spearman", "kappa", "agreement"])
        typer.echo("\nrules people disagree with most:")
        _print_frame(rep.rules.head(15).round(3), ["rule_id", "polarity", "n_reviewed_hits", "mean_human_total",
                                                   "disagreement"])
