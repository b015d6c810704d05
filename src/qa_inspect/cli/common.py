"""What every command shares: error-to-exit-code mapping and common options."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from qa_inspect.errors import BugError, QAError, UsageError

T = TypeVar("T")

RulesOpt = Annotated[
    Path | None,
    typer.Option("--rules", help="Configuration folder (rule sets, profiles, knowledge, shops.yaml). "
                 "Default: $QA_INSPECT_RULES or the bundled rules/."),
]


@contextmanager
def exit_codes() -> Iterator[None]:
    """Map domain errors to exit codes: 1 user error, 2 usage, 3 bug (with traceback)."""
    try:
        yield
    except typer.Exit:
        raise
    except UsageError as exc:
        typer.echo(f"usage error: {exc}", err=True)
        raise typer.Exit(2) from None
    except BugError as exc:
        typer.echo(f"internal error (a bug in qa-inspect, please report): {exc}", err=True)
        traceback.print_exc(file=sys.stderr)
        raise typer.Exit(3) from None
    except QAError as exc:
        typer.echo(f"error: {exc}", err=True)
        if os.environ.get("QA_INSPECT_DEBUG"):
            traceback.print_exc(file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - anything else is our bug
        typer.echo(f"internal error (a bug in qa-inspect, please report): {type(exc).__name__}: {exc}",
                   err=True)
        traceback.print_exc(file=sys.stderr)
        raise typer.Exit(3) from None


def call(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call one library function under the exit-code mapping."""
    with exit_codes():
        return fn(*args, **kwargs)
