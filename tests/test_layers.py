"""The house keeps its shape: no import circles, and no import from a lower layer into a higher one.

Every ``import`` in ``planner/`` counts, wherever it stands (module level, inside a function, under
``TYPE_CHECKING``): a lazy import is still a dependency. ``from package import submodule`` is an
import of the submodule. The layers, top to bottom (``DESIGN.md``, "Layout"):

    composers   cli > sweep > pipeline > workflows   (each may import the ones after it)
    executors   implement the search's candidate-pool interface
    stages      one sub-package or module per stage; a stage never imports another stage
    report      reads records only
    backends
    tasks
    models
    records
    leaves      config, params, errors, version, paths, process

A module may import its own layer (without a circle) or any layer below. ``profilers`` and
``solvers`` never import ``planner``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSERS = ("planner.cli", "planner.sweep", "planner.pipeline", "planner.workflows")
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((name.rpartition(".")[2], (name,)) for name in COMPOSERS),
    ("executors", ("planner.executors",)),
    ("stages", ("planner.stages",)),
    ("report", ("planner.report",)),
    ("backends", ("planner.backends",)),
    ("tasks", ("planner.tasks",)),
    ("models", ("planner.models",)),
    ("records", ("planner.records",)),
    (
        "leaves",
        (
            "planner.config",
            "planner.params",
            "planner.errors",
            "planner.version",
            "planner.paths",
            "planner.process",
        ),
    ),
)
MAX_TOP_LEVEL_MODULES = 10


def module_files(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a package is its ``__init__``)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """Every module name ``module`` imports, anywhere in its file (relative imports resolved)."""
    known = set(known)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            names.update(submodules or [base])
            if len(submodules) < len(node.names):
                names.add(base)
    return names


def owner(name: str, known: Iterable[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (None: not one of ours)."""
    known = set(known)
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(package: str = "planner") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (the root package's lazy table is left out)."""
    files = module_files(package)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        if module == package:
            continue
        targets = {owner(n, files) for n in imported_names(module, path, files)}
        graph[module] = {t for t in targets if t is not None and t not in (module, package)}
    return graph


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int:
    """Position of ``module``'s layer in ``LAYERS`` (0 = top)."""
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS in {__file__} (and to DESIGN.md)")


def stage_of(module: str) -> str | None:
    """ "search" for ``planner.stages.search.runner``; None outside ``planner.stages``."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["planner", "stages"] else None


def violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports that run up a layer, or from one stage into another."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) < layer_of(module):
                found.append(f"{module} -> {target} (up from {LAYERS[layer_of(module)][0]})")
            elif stage_of(module) and stage_of(target) and stage_of(module) != stage_of(target):
                found.append(f"{module} -> {target} (one stage into another)")
            elif stage_of(module) is None and target == "planner.stages" and module != "planner.stages":
                found.append(f"{module} -> planner.stages (import the stage, not the package)")
    return found


def test_the_planner_has_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_no_import_runs_up_a_layer_or_across_stages() -> None:
    assert violations(import_graph()) == []


def test_every_module_belongs_to_a_layer() -> None:
    for module in import_graph():
        layer_of(module)


def test_planner_top_level_stays_small() -> None:
    modules = [p.stem for p in (ROOT / "planner").glob("*.py") if p.stem != "__init__"]
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, sorted(modules)


@pytest.mark.parametrize("package", ["profilers", "solvers"])
def test_profilers_and_solvers_never_import_the_planner(package: str) -> None:
    for module, path in module_files(package).items():
        planner_imports = sorted(n for n in imported_names(module, path, ()) if n.split(".")[0] == "planner")
        assert planner_imports == [], f"{module} imports {planner_imports}"


def test_the_checks_catch_a_circle_an_upward_import_and_a_stage_crossing() -> None:
    graph = {
        "planner.config.run": {"planner.backends"},  # a leaf reaching up
        "planner.backends": {"planner.config.run"},  # ... which closes a circle
        "planner.stages.verify": {"planner.stages.profile.measure"},  # one stage into another
        "planner.stages.profile.measure": set(),
        "planner.records.plan": {"planner.pipeline"},  # a record importing a composer
        "planner.pipeline": set(),
    }
    assert circles(graph) == [["planner.backends", "planner.config.run"]]
    found = violations(graph)
    assert "planner.config.run -> planner.backends (up from leaves)" in found
    assert "planner.stages.verify -> planner.stages.profile.measure (one stage into another)" in found
    assert "planner.records.plan -> planner.pipeline (up from records)" in found
    assert not any(v.startswith("planner.backends ->") for v in found)


def test_from_package_import_submodule_is_an_import_of_the_submodule(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from planner.report import plots\nfrom planner.report import render_folder\n")
    names = imported_names("planner.x", source, {"planner.report", "planner.report.plots"})
    assert names == {"planner.report.plots", "planner.report"}
