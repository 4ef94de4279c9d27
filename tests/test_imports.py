"""One import package, no import cycles: what keeps ranktune installable next to anything."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.import_graph import find_cycle, import_graph, module_files

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("service", "search", "trainer", "migrations")


def project_modules() -> dict[str, Path]:
    """Every module of the package (its folders under their ``ranktune.`` names) and of ``bench``."""
    roots = {f"ranktune.{folder}": ROOT / folder for folder in FOLDERS} | {"bench": ROOT / "bench"}
    modules = module_files(roots)
    modules.update({"ranktune": ROOT / "ranktune" / "__init__.py"})
    modules.update({"ranktune.__main__": ROOT / "ranktune" / "__main__.py"})
    return modules


def test_the_package_root_maps_each_folder_by_a_relative_symlink() -> None:
    for folder in FOLDERS:
        link = ROOT / "ranktune" / folder
        assert link.is_symlink(), f"ranktune/{folder} must be a symlink to ../{folder}"
        assert Path(link.readlink()) == Path("..") / folder
        assert (link / "__init__.py").resolve() == (ROOT / folder / "__init__.py").resolve()


def test_the_project_import_graph_is_acyclic() -> None:
    graph = import_graph(project_modules())
    # The graph is real: the CLI's app imports its verb modules, the registry its strategies (lazily).
    assert "ranktune.service.cli.plan" in graph["ranktune.service.cli.app"]
    assert "ranktune.search.engine" in graph["ranktune.search.strategies"]
    assert "bench.search_quality_common" in graph["bench.search_quality"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_a_lazy_cycle_through_a_package(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub import low\n")
    (package / "sub" / "low.py").write_text("def later():\n    from pkg import top\n")
    top = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import other\n"
    (package / "top.py").write_text(top + "from .sub import low\n")
    (package / "other.py").write_text("import pkg.top\n")
    graph = import_graph(module_files({"pkg": package}))
    assert graph["pkg.top"] == {"pkg.sub", "pkg.sub.low"}  # the TYPE_CHECKING import is not an edge
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"pkg.sub", "pkg.sub.low", "pkg.top"}
    (package / "sub" / "low.py").write_text("def later():\n    return 1\n")
    assert find_cycle(import_graph(module_files({"pkg": package}))) is None


def test_no_module_imports_the_folders_by_their_old_top_level_names() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    old = re.compile(r"^\s*(from|import) (service|search|trainer|migrations)\b", re.MULTILINE)
    offenders = [
        f"{name}:{text.count(chr(10), 0, m.start()) + 1}"
        for name in tracked
        for text in [(ROOT / name).read_text(encoding="utf-8")]
        for m in old.finditer(text)
    ]
    assert offenders == [], "import ranktune.<folder> instead: " + ", ".join(offenders)


@pytest.mark.parametrize("code", ["import service", "import search", "import trainer", "import migrations"])
def test_the_folders_are_not_importable_by_their_old_names_from_outside_the_checkout(
    code: str, tmp_path: Path
) -> None:
    import sys

    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "ModuleNotFoundError" in result.stderr, textwrap.shorten(
        result.stdout + result.stderr, 300
    )
