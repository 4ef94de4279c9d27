"""The real ``ranktune`` CLI as the static deploy tests use it: commands parsed, never run.

Every command a deployment file runs (docker-compose.yml, the Kubernetes manifests, the Slurm
script, the README) goes through the click command typer builds from ``ranktune.service.cli.app``:
a verb, option or choice that does not exist fails here, as it would on the cluster.
"""

from __future__ import annotations

from typing import Any

import typer

from ranktune.service.cli import app as ranktune_app
from ranktune.service.settings import Settings
from tests.deploy_files import ROOT, SOURCE_PACKAGES


def parse_cli(args: list[str]) -> tuple[tuple[str, ...], dict[str, Any], Any]:
    """Parse ``ranktune ARGS`` exactly as the CLI would, running nothing.

    Returns the command path (``("db", "upgrade")``), its parsed parameters and the click command;
    an unknown verb or option, a bad value or a missing required option raises.
    """
    root = typer.main.get_command(ranktune_app)
    context = root.make_context("ranktune", list(args))
    command, path = root, []
    while hasattr(command, "resolve_command"):
        protected = getattr(context, "_protected_args", None)  # click >= 8.2; before: protected_args
        rest = [*(context.protected_args if protected is None else protected), *context.args]
        if not rest:
            raise ValueError(f"ranktune {' '.join(path)}: a subcommand is missing")
        name, command, rest = command.resolve_command(context, rest)
        assert name is not None and command is not None
        path.append(name)
        context = command.make_context(name, rest, parent=context)
    return tuple(path), context.params, command


def ranktune_args(argv: list[str]) -> list[str]:
    assert argv and argv[0] == "ranktune", f"runs {argv[:1]}, not ranktune"
    return argv[1:]


def option_envvars(command: Any) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def settings_env_names() -> set[str]:
    return {f"RANKTUNE_{name.upper()}" for name in Settings.model_fields}


def read_by_code(name: str) -> bool:
    """The variable's name appears as a string literal in the packages (os.environ lookups)."""
    return any(
        f'"{name}"' in path.read_text()
        for package in SOURCE_PACKAGES
        for path in (ROOT / package).rglob("*.py")
    )


def is_real_variable(name: str, command: Any | None = None) -> bool:
    """A ``RANKTUNE_*`` name something reads: a setting, an option of ``command``, or the code."""
    options = option_envvars(command) if command is not None else set()
    return name in settings_env_names() | options or read_by_code(name)
