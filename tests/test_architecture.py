"""The house keeps its shape: data flows one way, no import runs up a floor, no circles.

The floors are DESIGN.md section 3's parts, from the ground up. A module may import from
its own floor (another module of its own part, or a part beside it) or below, never
above; and no set of modules imports each other in a circle. Every import counts: at the
top of a module, inside a function, and under ``if TYPE_CHECKING``, because an import
hidden in a function body is still an arrow in the house.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aoe"

#: The parts of DESIGN.md section 3, ground floor first. A part is a package or a module.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("aoe.errors", "aoe.clock"),
    ("aoe.spec",),
    ("aoe.providers", "aoe.graph", "aoe.retry"),
    ("aoe.cost", "aoe.ratelimit", "aoe.ledger", "aoe.tools", "aoe.coordination"),
    ("aoe.monitor",),
    ("aoe.services",),
    ("aoe.engine",),
    ("aoe.app",),
    ("aoe.report",),
    ("aoe.ui",),
    ("aoe.cli",),
    ("aoe", "aoe.__main__"),  # the package face
)

#: Typing-only imports that run up a floor, each with why it is the lesser evil.
TYPING_ONLY_UPWARD = {
    # ProviderError carries the usage of a call it may have billed; the error tree is the
    # ground floor that every part raises from, so it names the type without importing it.
    ("aoe.errors", "aoe.providers.base"),
}

#: What may stand at the root of ``aoe/`` beside the parts: DESIGN.md section 3.
ROOT_FILES = {"__init__.py", "__main__.py", "errors.py", "clock.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _part(module: str) -> str:
    """The part a module belongs to: the longest FLOORS entry that contains it."""
    best = ""
    for part in itertools.chain.from_iterable(FLOORS):
        if (module == part or module.startswith(part + ".")) and len(part) > len(best):
            best = part
    assert best, f"{module} belongs to no part of FLOORS: add its part to the house plan"
    return best


FLOOR = {part: level for level, parts in enumerate(FLOORS) for part in parts}


def _typing_block(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> Iterator[tuple[str, int, bool]]:
    """(imported aoe module, line, typing only) for every import of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _typing_block(node):
            for inner in node.body:
                typing_lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names = [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            target = name
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target, node.lineno, node.lineno in typing_lines


def _graph() -> nx.DiGraph:  # type: ignore[type-arg]
    graph: nx.DiGraph = nx.DiGraph()  # type: ignore[type-arg]
    graph.add_nodes_from(MODULES)
    for module in MODULES:
        for target, _, typing_only in _imports(module):
            if not typing_only:
                graph.add_edge(module, target)
    return graph


def test_every_module_belongs_to_a_part_and_the_root_holds_only_what_the_design_says() -> None:
    """A newcomer who opens aoe/ sees the parts of the design and nothing loose beside them."""
    parts = set(itertools.chain.from_iterable(FLOORS))
    for module in MODULES:
        _part(module)
    loose = {p.name for p in PACKAGE.glob("*.py")} - ROOT_FILES
    single_module_parts = {f"{p.removeprefix('aoe.')}.py" for p in parts}
    assert loose <= single_module_parts, f"loose at the root: {sorted(loose - single_module_parts)}"
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert {f"aoe.{p}" for p in packages} <= parts


def test_no_import_runs_up_a_floor() -> None:
    """Data flows one way: every import goes to the same floor or below."""
    upward = []
    for module in sorted(MODULES):
        here = FLOOR[_part(module)]
        for target, line, typing_only in _imports(module):
            there = FLOOR[_part(target)]
            if there > here and not (typing_only and (module, target) in TYPING_ONLY_UPWARD):
                upward.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}")
    assert upward == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    """No circle of imports, between modules or between parts."""
    graph = _graph()
    circles = list(itertools.islice(nx.simple_cycles(graph), 5))
    assert circles == []
    parts: nx.DiGraph = nx.DiGraph()  # type: ignore[type-arg]
    parts.add_edges_from((_part(a), _part(b)) for a, b in graph.edges if _part(a) != _part(b))
    assert list(itertools.islice(nx.simple_cycles(parts), 5)) == []


@pytest.mark.parametrize("library", ["rich", "typer"])
def test_the_engine_can_be_used_without_a_terminal(library: str) -> None:
    """Rich and Typer are the CLI's and the UI's: nothing below them imports either."""
    allowed = {"aoe.ui", "aoe.cli"}
    offenders = []
    for module, path in sorted(MODULES.items()):
        if _part(module) in allowed:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            found = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(name == library or name.startswith(library + ".") for name in found):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
