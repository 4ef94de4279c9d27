"""The Dockerfile, checked statically: base image, user, install order, what it copies."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy_files import (
    DOCKERIGNORE,
    ROOT,
    dockerfile_args,
    dockerfile_entrypoint,
    dockerfile_instructions,
)


def test_dockerfile_is_python_311_slim_and_ends_in_ranktune_as_a_user() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11-slim")
    assert dockerfile_entrypoint() == ["ranktune"]
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"


def test_dockerfile_installs_torch_before_the_project() -> None:
    runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"]
    args = dockerfile_args()

    def expand(text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)

    torch_at = [i for i, run in enumerate(runs) if re.search(r"pip install .*\btorch\b", expand(run))]
    project_at = [i for i, run in enumerate(runs) if re.search(r"pip install (\S+ )*\.(\s|$)", run)]
    assert torch_at, "Dockerfile: no RUN installs torch"
    assert project_at, "Dockerfile: no RUN installs the project (pip install .)"
    assert torch_at[0] < project_at[0], "Dockerfile: torch must be installed before the project"


def test_dockerfile_installs_the_openmp_runtime_lightgbm_needs() -> None:
    runs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    assert re.search(r"apt-get install .*\blibgomp1\b", runs), "lightgbm fails to import without libgomp1"


def test_dockerfile_copies_everything_the_package_build_needs() -> None:
    copied = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY":
            copied |= {Path(p).as_posix().rstrip("/") for p in rest.split()[:-1] if not p.startswith("--")}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    wanted = packages | {"pyproject.toml", "README.md"}
    assert wanted <= copied, f"the Dockerfile does not copy {sorted(wanted - copied)}"
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()}
    assert not wanted & ignored, f".dockerignore drops {sorted(wanted & ignored)}"
    assert {".env", ".venv", ".git"} <= ignored, ".dockerignore must keep secrets and the venv out"
