"""What every verb module of the CLI shares: the two consoles and the one-line error wrapper."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from ranktune.search.errors import RanktuneError

out = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print ranktune's own errors as one line and exit 2; print warnings as one line each."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return command(*args, **kwargs)
            except RanktuneError as e:
                err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            finally:
                for w in caught:
                    if issubclass(w.category, UserWarning) and w.filename.find("transformers") < 0:
                        err.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)

    return wrapper
