"""The rooms of the house, enforced by reading every shipped module's imports.

- ``harbinger`` is the shared core: it imports no component and no library above it.
- The components (``webhooks``, ``extender``, ``scaler``, ``chaos``, ``certs``) never import
  each other; what two of them share lives in the core.
- ``models`` is the forecasting library the components call; it imports only the core.
- No shipped package imports the development harness (``harbinger_dev``), and none reads a
  path outside its own package (the installed wheel has no repository around it).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = "harbinger"
LIBRARY = "models"
COMPONENTS = ("webhooks", "extender", "scaler", "chaos", "certs")
SHIPPED = (CORE, LIBRARY, *COMPONENTS)
HARNESS = "harbinger_dev"

#: What each shipped package may import of the project's own packages (besides itself).
ALLOWED = {
    CORE: set(),
    LIBRARY: {CORE},
    **{component: {CORE, LIBRARY} for component in COMPONENTS},
}


def project_imports(path: Path) -> set[tuple[str, int]]:
    """(top-level project package, line) for every import in the module, lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in (*SHIPPED, HARNESS):
                found.add((top, node.lineno))
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", SHIPPED)
def test_each_package_imports_only_what_its_room_allows(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in modules(package)
        for top, line in sorted(project_imports(path))
        if top != package and top not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_loop_between_packages() -> None:
    graph: dict[str, set[str]] = {package: set() for package in SHIPPED}
    for package in SHIPPED:
        for path in modules(package):
            graph[package] |= {top for top, _ in project_imports(path) if top != package and top in SHIPPED}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the loop


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: a component importing another, lazily inside a function, is seen."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from scaler.plan import ServicePlan\n    import harbinger_dev.traces\n")
    assert project_imports(module) == {("scaler", 2), ("harbinger_dev", 3)}


def climbs_out(path: Path, depth: int) -> list[str]:
    """``Path(__file__).parents[N]`` or ``.parent.parent`` reaching above the package root,
    for a module ``depth`` levels inside its package (1: at the package's top)."""
    wrong = []
    for node in ast.walk(ast.parse(path.read_text())):
        text = ast.unparse(node) if isinstance(node, ast.Subscript | ast.Attribute) else ""
        if "__file__" not in text:
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "parents" and isinstance(node.slice, ast.Constant) \
                and int(node.slice.value) >= depth:
            wrong.append(f"{path.name}:{node.lineno}: {text}")
        if isinstance(node, ast.Attribute) and node.attr == "parent" and text.count(".parent") > depth:
            wrong.append(f"{path.name}:{node.lineno}: {text}")
    return wrong


def test_the_path_rule_catches_a_climb(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from pathlib import Path\nA = Path(__file__).resolve().parents[1]\n"
                      "B = Path(__file__).parent.parent\nC = Path(__file__).parent / 'data'\n")
    assert [line.split(":")[1] for line in climbs_out(module, 1)] == ["2", "3"]


@pytest.mark.parametrize("package", SHIPPED)
def test_no_shipped_module_reads_paths_outside_its_package(package: str) -> None:
    """Such a path climbs out of the installed package into a repository that an installed
    copy does not have."""
    wrong = [problem for path in modules(package)
             for problem in climbs_out(path, len(path.relative_to(ROOT / package).parts))]
    assert not wrong, "\n".join(wrong)
