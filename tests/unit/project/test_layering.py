"""The package's import graph: no cycles, and data flows one way (core -> model -> pipeline ->
promotion -> serving -> monitoring -> cli): no module imports one of a higher layer, and no
pipeline stage imports another stage. Every import counts, also those inside functions and
TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

from support.paths import REPO

PACKAGE = REPO / "src" / "plumbline"

# Lower number = lower layer. A module may import modules of its own or a lower layer. The
# folders are the layers, in the order data flows through them.
LAYERS: dict[str, int] = {
    "__init__": 0,  # the package itself: it only pins the BLAS kernels before numpy loads
    "core": 0,  # contract, settings, paths, errors, file formats, MLflow set-up
    "governance": 1,  # identities, roles and the audit trail (a SQL hash chain)
    "model": 1,  # features, the artifact, metrics, explanations, fairness, statistics
    "pipeline": 2,  # the DVC stages and evaluate's reports
    "promotion": 3,  # gates, registry, lineage, the pull-request report
    "serving": 4,  # the prediction server, with rollout/
    "monitoring": 5,  # drift, live performance, retraining, the rollout decision, the demo
    "cli": 6,  # the `plumbline` command: a table of subcommands
    "__main__": 7,
}

# The DVC stages (pipeline/ also holds evaluate's report writers, which stages may share).
STAGE_MODULES = {
    f"plumbline.pipeline.{stage}"
    for stage in ("ingest", "validate", "featurize", "train", "evaluate")
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The plumbline modules that ``path`` imports (``from plumbline import x`` -> plumbline.x)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("plumbline"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "plumbline":
                found.update(f"plumbline.{a.name}" for a in node.names)
            elif node.module.startswith("plumbline."):
                found.add(node.module)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports(path):
            # ``from plumbline.pipeline import train`` names a module; a name inside a module
            # (``from plumbline.core.settings import Params``) resolves to that module.
            while imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    assert top in LAYERS, f"{module}: give it a layer in LAYERS"
    return LAYERS[top]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_plumbline() -> None:
    assert cycles(graph()) == []


def test_imports_only_go_down_the_layers() -> None:
    upward = [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in sorted(graph().items())
        for target in sorted(targets)
        if layer(target) > layer(source)
    ]
    assert upward == []


def test_no_stage_imports_another_stage() -> None:
    edges = graph()
    siblings = [
        f"{source} imports {target}"
        for source, targets in sorted(edges.items())
        if source in STAGE_MODULES
        for target in sorted(targets)
        if target in STAGE_MODULES
    ]
    assert siblings == []
