"""The package's layers, read from its imports (every import statement, those inside functions
too): a module imports only from its own layer or below, a task never from another task, and
no two modules import each other, however indirectly."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A name stands for that module and everything below it.
LAYERS = [
    (
        "leaves",
        [
            "alexsuite.version",
            "alexsuite.errors",
            "alexsuite.fileio",
            "alexsuite.devices",
            "alexsuite.reporting",
            "alexsuite.distributed",
            "alexsuite.boxes",
            "alexsuite.settings",
        ],
    ),
    ("metrics", ["alexsuite.evaluation"]),  # pure functions over arrays
    ("data", ["alexsuite.data", "alexsuite.viz"]),
    ("models", ["alexsuite.models"]),
    ("features", ["alexsuite.embedding", "alexsuite.proposals"]),
    ("tasks", ["alexsuite.training", "alexsuite.retrieval", "alexsuite.detection"]),
    ("orchestration", ["alexsuite.demo", "alexsuite.report"]),
    ("python api", ["alexsuite.api"]),  # Model, Index, Detector: what scripts and the commands call
    # the command line, the HTTP server and the package's lazy exports
    ("front doors", ["alexsuite.cli", "alexsuite.serve", "alexsuite"]),
]
TASKS = LAYERS[5][1]


def modules() -> dict[str, Path]:
    """Every module of the library and of cli/ (installed as alexsuite.cli), by dotted name."""
    found = {}
    for base, package in ((ROOT / "alexsuite", "alexsuite"), (ROOT / "cli", "alexsuite.cli")):
        for path in base.rglob("*.py"):
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The alexsuite modules `name` imports (a package's own __init__ counts as that package)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        else:
            continue
        for t in targets:
            while t not in known and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in known and t != name:
                out.add(t)
    return out


def layer_of(name: str) -> tuple[int, str]:
    """(layer rank, the layer entry it falls under): the longest matching entry wins."""
    best = None
    for rank, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            matches = name == entry or name.startswith(entry + ".")
            if matches and (best is None or len(entry) > len(best[1])):
                best = (rank, entry)
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_the_graph_is_read():
    # a parser that found nothing would pass every test below
    assert "alexsuite.boxes" in GRAPH["alexsuite.detection.detector"]
    assert "alexsuite.data.transforms" in GRAPH["alexsuite.data.paste"]
    assert len(GRAPH) > 40


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_go_down_the_layers(name):
    rank, entry = layer_of(name)
    for target in sorted(GRAPH[name]):
        target_rank, target_entry = layer_of(target)
        assert target_rank <= rank, (
            f"{name} ({LAYERS[rank][0]}) imports {target} ({LAYERS[target_rank][0]}), a higher layer"
        )
        if entry in TASKS and target_entry in TASKS:
            assert target_entry == entry, f"{name} imports {target}: tasks do not import each other"


def test_no_import_cycles():
    """Tarjan's strongly connected components: any component of two or more is a cycle."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
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
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
