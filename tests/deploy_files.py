"""The deployment files as the static deploy tests read them: docker-compose.yml, .env.example, the
Dockerfile, the Kubernetes manifests and the Slurm script (no Docker engine, cluster or Slurm runs
here, so nothing is built, applied or submitted)."""

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
KUBERNETES = ROOT / "deploy" / "kubernetes"
SECRET_EXAMPLE = KUBERNETES / "secret.example.yaml"
SLURM_SCRIPT = ROOT / "deploy" / "slurm" / "ranktune-worker.sbatch"
RANKTUNE_SERVICES = ("migrate", "api", "worker", "optuna-sync")
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


def command_lines(path: Path) -> list[str]:
    """Shell command lines of a file, backslash continuations joined.

    Markdown: the lines of ```bash blocks and every inline `code` span. Other files: their indented
    comment lines (``#   docker compose run …``), as docker-compose.yml and .env.example show them.
    """
    lines, pending, fence = [], "", None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if path.suffix == ".md":
            if line.startswith("```"):
                fence = None if fence is not None else line[3:].strip()
                continue
            if fence is None:
                lines += re.findall(r"`([^`]+)`", line)
                continue
            if fence not in ("bash", "sh", "shell", "console"):
                continue
        else:
            indented = re.match(r"#\s{2,}(\S.*)", line)  # a command in a comment is indented
            if not indented:
                continue
            line = indented.group(1)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


# --- Kubernetes -------------------------------------------------------------------------------

# What render() understands of a kustomization.yaml; a field outside it fails the tests, so that
# the manifests checked are always those `kubectl apply -k` would send.
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a manifest file, empty ones dropped."""
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert all(isinstance(d, dict) for d in documents), f"{path}: every document must be a mapping"
    return documents


def kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(data, dict), f"{directory}/kustomization.yaml must hold a mapping"
    return data


def kustomization_files(directory: Path) -> set[Path]:
    """Every file `kubectl apply -k DIRECTORY` reads, kustomization.yaml files included."""
    files = {directory / "kustomization.yaml"}
    for entry in kustomization(directory).get("resources", []):
        path = (directory / entry).resolve()
        files |= kustomization_files(path) if path.is_dir() else {path}
    return files


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize DIRECTORY` builds, for the fields in KUSTOMIZATION_FIELDS."""
    spec = kustomization(directory)
    unknown = set(spec) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}/kustomization.yaml: render() does not apply {sorted(unknown)}"
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else load_documents(path)
    namespace = spec.get("namespace")
    for obj in objects:
        metadata = obj.setdefault("metadata", {})
        if namespace and obj["kind"] == "Namespace":
            metadata["name"] = namespace  # kustomize renames the Namespace object itself
        elif namespace and obj["kind"] not in CLUSTER_SCOPED:
            metadata["namespace"] = namespace
        for container in containers(obj):
            container["image"] = rename_image(container["image"], spec.get("images", []))
    return objects


def rename_image(image: str, rules: list[dict[str, str]]) -> str:
    name, tag = split_image(image)
    for rule in rules:
        if rule["name"] == name:
            return f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"
    return image


def split_image(image: str) -> tuple[str, str]:
    """(name, tag), the tag ``latest`` when there is none, as the kubelet reads an image reference."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag, or the ':' belongs to a registry's port
        return image, "latest"
    return name, tag


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    if obj["kind"] == "Pod":
        return spec
    template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
    return template.get("spec") if template else None


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers first, then the containers, of an object that runs pods."""
    spec = pod_spec(obj) or {}
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def dockerfile_uid() -> int:
    """The uid of the user the image runs as (``useradd --uid N``)."""
    for keyword, rest in dockerfile_instructions():
        match = re.search(r"useradd .*--uid (\d+)", rest) if keyword == "RUN" else None
        if match:
            return int(match.group(1))
    raise AssertionError("Dockerfile: no `useradd --uid`")
