"""The wheel holds one top-level import package, ``ranktune``, and installs next to PyPI's ``trainer``.

The wheel is built from a copy of what the Dockerfile copies (pyproject.toml, README.md, ranktune/
and the four folders it maps), so the checkout is left as it is. The fresh virtual environment gets
the wheel and Coqui's ``trainer`` from the package index; ranktune's own dependencies (torch, …) are
borrowed from the test's environment through a ``.pth`` line placed after everything installed there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.test_imports import FOLDERS, ROOT

COQUI_TRAINER = "trainer==0.0.36"  # Coqui's trainer, the PyPI package the issue names
pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path, timeout: float = 600) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "ranktune", source / "ranktune", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    dist = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    run([*pip_wheel, "-w", str(dist), "."], cwd=source)
    (built,) = dist.glob("ranktune-*.whl")
    return built


def test_the_wheel_has_one_top_level_package_holding_every_module(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"ranktune"}
    (info,) = dist_info
    assert f"{info}/top_level.txt" not in names or (
        zipfile.ZipFile(wheel).read(f"{info}/top_level.txt").decode().split() == ["ranktune"]
    )
    expected = {"ranktune/__init__.py", "ranktune/__main__.py"}
    for folder in FOLDERS:
        expected |= {
            f"ranktune/{path.relative_to(ROOT).as_posix()}"
            for path in (ROOT / folder).rglob("*")
            if path.is_file() and path.suffix in (".py", ".html", ".js", ".css", ".mako")
        }
    assert expected <= set(names), f"missing from the wheel: {sorted(expected - set(names))[:10]}"
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "ranktune = ranktune.service.cli:main" in entry_points


def test_the_wheel_installs_next_to_coquis_trainer_and_both_import(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    # No pip of its own to bootstrap (seconds): this environment's pip installs into it (--python).
    run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=tmp_path)
    python = env / "bin" / "python"
    pip_install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    run([*pip_install, "--no-deps", str(wheel)], cwd=tmp_path)
    site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).strip()
    )
    (site / "zz_borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # Coqui's trainer imports requests without declaring it.
    run([*pip_install, COQUI_TRAINER, "requests"], cwd=tmp_path)
    probe = (
        "import trainer, ranktune, ranktune.trainer.proxy, ranktune.service.cli, ranktune.search\n"
        "from trainer import Trainer, TrainerArgs\n"
        "print(trainer.__file__); print(ranktune.__file__); print(ranktune.trainer.__file__)\n"
        "print(ranktune.search.RankSchedule.__name__)\n"
    )
    lines = run([str(python), "-c", probe], cwd=tmp_path).split()
    coqui, ours, our_trainer, schedule = lines
    assert Path(coqui) == site / "trainer" / "__init__.py"
    assert Path(ours) == site / "ranktune" / "__init__.py"
    assert Path(our_trainer) == site / "ranktune" / "trainer" / "__init__.py"
    assert schedule == "RankSchedule"
    # The console script and ``python -m ranktune`` run from the installed wheel.
    planned = run([str(env / "bin" / "ranktune"), "plan", "--model", "builtin:tiny-vlm", "--budget-rank", "8",
                   "--format", "peft"], cwd=tmp_path)  # fmt: skip
    assert '"rank_pattern"' in planned
    assert "Usage: ranktune" in run([str(python), "-m", "ranktune", "--help"], cwd=tmp_path)
