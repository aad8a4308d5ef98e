"""The package layering holds, in the code and in the packages' manifests.

* The import contracts (pyproject.toml, [tool.importlinter]) are kept: ``lint-imports``.
* The visuomotor dependencies the ``package.xml`` files declare form no cycle (colcon refuses
  one), and every visuomotor package a package's Python code imports is declared in its
  ``package.xml`` (else an install of that package alone misses it at run time).
* The declared dependencies run the same way as the import-linter ``layers`` contract: no
  package depends, even through others, on a package above it.
"""

from __future__ import annotations

import ast
import itertools
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: package.xml tags that declare a dependency (format 3).
DEPENDENCY_TAGS = ("depend", "build_depend", "build_export_depend", "exec_depend",
                   "buildtool_depend", "test_depend")


def _base_paths() -> list[Path]:
    """Where colcon looks for packages: the ``--base-paths`` of scripts/setup.sh (relative
    to ros2_ws)."""
    text = (REPO / "scripts" / "setup.sh").read_text()
    match = re.search(r"--base-paths ((?:[^\s\\-][^\s\\]*\s+)+)", text)
    assert match, "scripts/setup.sh: no colcon --base-paths"
    return [(REPO / "ros2_ws" / path).resolve() for path in match.group(1).split()]


def _manifests() -> dict[str, Path]:
    """Every package of the workspace: name -> its folder."""
    packages = {}
    for base in _base_paths():
        for manifest in sorted(base.rglob("package.xml")):
            name = ET.parse(manifest).getroot().findtext("name")
            assert name and name not in packages, f"{manifest}: name {name!r} missing or taken"
            packages[name] = manifest.parent
    return packages


PACKAGES = _manifests()


def _declared(folder: Path) -> set[str]:
    """The workspace packages ``folder/package.xml`` declares a dependency on."""
    root = ET.parse(folder / "package.xml").getroot()
    return {element.text.strip() for tag in DEPENDENCY_TAGS for element in root.iter(tag)
            if element.text and element.text.strip() in PACKAGES}


def _imported(folder: Path) -> dict[str, list[str]]:
    """Workspace packages the Python files under ``folder`` import -> where (file:line)."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                if top in PACKAGES:
                    where = f"{path.relative_to(REPO)}:{node.lineno}"
                    found.setdefault(top, []).append(where)
    return found


def _graph() -> dict[str, set[str]]:
    return {name: _declared(folder) for name, folder in PACKAGES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One dependency cycle of ``graph`` (name -> names it depends on) as a path that ends
    where it starts, or None when there is none."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in stack:
            return [*stack[stack.index(name):], name]
        if name in done:
            return None
        stack.append(name)
        for dependency in sorted(graph.get(name, ())):
            cycle = visit(dependency)
            if cycle:
                return cycle
        stack.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name)
        if cycle:
            return cycle
    return None


def _closure(graph: dict[str, set[str]], name: str) -> set[str]:
    """Everything ``name`` depends on, directly or through others."""
    seen: set[str] = set()
    todo = list(graph[name])
    while todo:
        dependency = todo.pop()
        if dependency not in seen:
            seen.add(dependency)
            todo.extend(graph.get(dependency, ()))
    return seen


def test_import_contracts_are_kept():
    lint_imports = shutil.which("lint-imports")
    if lint_imports is None:
        pytest.fail("lint-imports not found: install requirements/dev.txt (import-linter)")
    proc = subprocess.run([lint_imports, "--no-cache"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_every_package_of_the_workspace_is_found():
    assert set(PACKAGES) >= {
        "visuomotor_interfaces", "visuomotor_description", "visuomotor_core", "visuomotor_sim",
        "visuomotor_models", "visuomotor_ros", "visuomotor_bringup"}


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_declared_package_dependencies_have_no_cycle():
    cycle = find_cycle(_graph())
    assert cycle is None, f"package.xml dependency cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_every_imported_visuomotor_package_is_declared(name):
    declared = _declared(PACKAGES[name])
    missing = {package: where for package, where in _imported(PACKAGES[name]).items()
               if package != name and package not in declared}
    assert not missing, (
        f"{name}/package.xml lacks <exec_depend> on "
        + "; ".join(f"{package} (imported at {', '.join(where[:3])})"
                    for package, where in sorted(missing.items())))


def test_declared_dependencies_follow_the_import_layers():
    """A package of a lower layer of the ``layers`` contract never depends on a higher one."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(contract["layers"] for contract in config["contracts"]
                  if contract["type"] == "layers")
    graph = _graph()
    for index, lower in enumerate(layers):
        above = set(layers[:index])
        assert not _closure(graph, lower) & above, (
            f"{lower} depends on {sorted(_closure(graph, lower) & above)}, above it")
    for upper, lower in itertools.pairwise(layers):
        assert lower in _closure(graph, upper), f"{upper} does not depend on {lower}"


def test_nodes_never_depend_on_the_bringup():
    graph = _graph()
    assert "visuomotor_bringup" not in _closure(graph, "visuomotor_ros")
    assert {"visuomotor_ros", "visuomotor_description"} <= graph["visuomotor_bringup"]
    assert "visuomotor_description" in graph["visuomotor_core"]
