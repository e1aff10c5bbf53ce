"""The code half of the stage dependency check: each stage's ``deps:`` in dvc.yaml lists
exactly the project modules its stage module imports, transitively (module-level and lazy
function-level imports alike; package ``__init__`` files that hold no code are not listed).

The params half runs the stages for real: tests/integration/pipeline/test_stage_deps.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support.paths import REPO

from plumbline.core import yamlfile

SRC = REPO / "src"
STAGES = ["ingest", "validate", "featurize", "tune", "train", "evaluate"]


def module_file(name: str) -> Path | None:
    base = SRC / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def direct_imports(name: str) -> set[str]:
    path = module_file(name)
    assert path is not None, name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "plumbline"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports would resolve against the package
                package = name.rsplit(".", node.level)[0]
                module = f"{package}.{node.module}" if node.module else package
            else:
                module = node.module or ""
            if module.split(".")[0] != "plumbline":
                continue
            found.add(module)
            # `from plumbline import skops_compat` imports a module, not a name
            found |= {f"{module}.{a.name}" for a in node.names if module_file(f"{module}.{a.name}")}
    # importing a.b.c runs a/__init__ and a/b/__init__ too
    for module in list(found):
        parts = module.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return found


def import_closure(name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        module = todo.pop()
        if module in seen or module_file(module) is None:
            continue
        seen.add(module)
        todo.extend(direct_imports(module))
    return seen


def declared_code_deps(stage: str) -> set[str]:
    spec = yamlfile.safe_load((REPO / "dvc.yaml").read_text())
    deps = spec["stages"][stage]["deps"]
    return {d for d in deps if isinstance(d, str) and d.startswith("src/")}


def holds_code(path: Path) -> bool:
    """More than a docstring and constants."""
    return not all(
        isinstance(node, ast.Expr | ast.Assign) and isinstance(node.value, ast.Constant)
        for node in ast.parse(path.read_text()).body
    )


def code_files(modules: set[str]) -> set[str]:
    files = set()
    for module in modules:
        path = module_file(module)
        assert path is not None
        if path.name == "__init__.py" and not holds_code(path):
            continue  # a package marker: nothing in it can change an output
        files.add(path.relative_to(REPO).as_posix())
    return files


@pytest.mark.parametrize("stage", STAGES)
def test_stage_code_deps_are_its_import_closure(stage: str) -> None:
    imported = code_files(import_closure(f"plumbline.pipeline.{stage}"))
    declared = declared_code_deps(stage)
    missing, extra = sorted(imported - declared), sorted(declared - imported)
    assert not missing and not extra, (
        f"dvc.yaml stage {stage!r}: deps lack {missing} (imported by the stage) and list "
        f"{extra} (not imported)"
    )


def test_package_markers_hold_no_code() -> None:
    """Why the closure may leave out most __init__ files: a docstring and constants at most.
    The package root is the one exception (it pins the BLAS kernels before numpy loads), and
    being code it is in every stage's deps."""
    for path in sorted(SRC.rglob("__init__.py")):
        if path == SRC / "plumbline" / "__init__.py":
            assert holds_code(path)
            continue
        assert not holds_code(path), f"{path.relative_to(REPO)} holds code; list it in deps"
    for stage in STAGES:
        assert "src/plumbline/__init__.py" in declared_code_deps(stage), stage
        assert "src/plumbline/core/numerics.py" in declared_code_deps(stage), stage


def test_closure_follows_lazy_and_module_imports() -> None:
    """The walker itself: evaluate imports plumbline.core.tracking inside a function, featurize
    imports skops_compat as `from plumbline import skops_compat`."""
    assert "plumbline.core.tracking" in import_closure("plumbline.pipeline.evaluate")
    assert "plumbline.core.skops_compat" in import_closure("plumbline.pipeline.featurize")
    assert "plumbline.promotion.registry" not in import_closure("plumbline.pipeline.train")
