"""The deployment files as the static deploy tests read them: docker-compose.yml, .env.example and
the Dockerfile (no Docker engine runs here, so nothing is built or started)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
RANKTUNE_SERVICES = ("migrate", "api", "worker")
SOURCE_PACKAGES = ("search", "service", "trainer")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; "$${...}" is a literal "$".
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must hold a mapping"
    return data


def env_example() -> dict[str, str]:
    """Every VAR=value line of .env.example, commented out or not."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def interpolate(value: str) -> str:
    """What compose would substitute: the inline default, else the .env.example value, else a placeholder."""
    example = env_example()

    def one(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        if operator in ("-", ":-"):
            return default
        return example.get(name) or f"placeholder-{name.lower()}"

    return VARIABLE.sub(one, value).replace("$$", "$")


def variables_in(text: str) -> set[str]:
    return {m.group(1) for m in VARIABLE.finditer(text)}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile_args() -> dict[str, str]:
    args = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def dockerfile_entrypoint() -> list[str]:
    entrypoints = [json.loads(rest) for keyword, rest in dockerfile_instructions() if keyword == "ENTRYPOINT"]
    assert entrypoints, "Dockerfile: no ENTRYPOINT"
    return entrypoints[-1]


def as_argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(interpolate(value)) if isinstance(value, str) else [interpolate(v) for v in value]


def service_argv(service: dict[str, Any]) -> list[str]:
    """The full argument vector the container runs: entrypoint (the image's unless overridden) + command."""
    entrypoint = as_argv(service["entrypoint"]) if "entrypoint" in service else dockerfile_entrypoint()
    return entrypoint + as_argv(service.get("command"))


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {k: (v if sep else None) for k, sep, v in (item.partition("=") for item in env)}
    return {k: None if v is None else str(v) for k, v in env.items()}
