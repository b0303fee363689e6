"""The package's import structure, read from its own code with `ast`: no import circle
between modules, and no folder importing one in a tier above it. Imports inside functions
and under `if TYPE_CHECKING:` count: a lazy import hides a dependency, it does not remove
it. CONTRIBUTING.md's layout table lists the same tiers."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgefreeze"

# Lowest first. A unit (a folder, or a module at the top of the package) may import units
# in lower tiers and itself, never one beside it or above it.
TIERS: list[set[str]] = [
    {
        "__init__",
        "errors",
        "hashing",
        "registry",
        "failpoints",
        "interrupts",
        "inference",
        "figures",
        "cli_reference",
        "atomic",
    },
    {"progress"},
    {"runtime", "context"},  # the device side, torch-free; what every stage of a run shares
    {"tasks", "fleet"},  # fleet: device bundles, the release repository, device updates
    {"schema"},  # the pipeline file; kinds register their settings here
    {"backbones"},
    {"data", "peft"},
    {"freeze"},
    {"cache"},
    {"train", "export", "gate"},
    {"quantize"},
    {"publish"},
    {"recipes"},  # build, sweep, inspect, verify-target: the stages in order
    {"cli"},
    {"__main__"},  # python -m edgefreeze
]
TIER_OF = {unit: tier for tier, units in enumerate(TIERS) for unit in units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The folder or top-level module a module belongs to (`edgefreeze` itself is
    `__init__`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported(
    source: str, module: str, modules: set[str], is_package: bool = False
) -> Iterator[tuple[str, int]]:
    """The package's modules that `module` (whose code is `source`) imports, with the
    line of each import."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name imported from a module
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line}. Importing a submodule runs its package's
    __init__ first, so that counts as an import of the package too."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, dict[str, int]] = {name: {} for name in paths}
    for name, path in paths.items():
        source = path.read_text(encoding="utf-8")
        for target, line in imported(source, name, set(paths), path.name == "__init__.py"):
            graph[name].setdefault(target, line)
            parent = target.rpartition(".")[0]
            while parent and parent in paths and not name.startswith(parent + "."):
                graph[name].setdefault(parent, line)
                parent = parent.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one module
    (Tarjan's algorithm), as the modules in import order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_in_a_circle():
    circles = cycles(import_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_no_folder_imports_one_beside_or_above_it():
    unknown = sorted({unit_of(m) for m in import_graph()} - set(TIER_OF))
    assert not unknown, f"add these to TIERS (and CONTRIBUTING.md's table): {unknown}"
    upward = [
        f"{module} imports {target} (line {line})"
        for module, targets in sorted(import_graph().items())
        for target, line in targets.items()
        if unit_of(module) != unit_of(target)
        and TIER_OF[unit_of(target)] >= TIER_OF[unit_of(module)]
    ]
    assert not upward, "imports against the tiers:\n" + "\n".join(upward)


def test_the_checks_find_a_circle_and_an_upward_import():
    """The graph code itself: a circle is found, and so is a lazy import inside a
    function, a relative import and a name imported from a module."""
    assert cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) == [["a", "b", "c"]]
    modules = {
        "edgefreeze.recipes",
        "edgefreeze.recipes.build",
        "edgefreeze.freeze",
        "edgefreeze.freeze.plan",
    }
    source = (
        "from .plan import FreezePlan\ndef f():\n    from edgefreeze.recipes.build import build\n"
    )
    assert list(imported(source, "edgefreeze.freeze.top_k", modules)) == [
        ("edgefreeze.freeze.plan", 1),
        ("edgefreeze.freeze.plan", 1),
        ("edgefreeze.recipes.build", 3),
        ("edgefreeze.recipes.build", 3),
    ]


@pytest.mark.parametrize("unit", sorted(TIER_OF))
def test_every_tier_names_a_real_part_of_the_package(unit):
    assert (PACKAGE / unit).is_dir() or (PACKAGE / f"{unit}.py").is_file()


def test_contributings_layout_table_lists_the_tiers():
    """The table people read is the tiers the test enforces: every part, in its tier."""
    text = (PACKAGE.parent / "CONTRIBUTING.md").read_text(encoding="utf-8")
    listed: dict[str, int] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            for part in re.findall(r"`([^`]+)`", cells[1]):
                listed[part.removesuffix("/").removesuffix(".py")] = int(cells[0])
    assert listed == TIER_OF
