"""The pull-request report: ``report.md``, written entirely offline.

It holds the gate verdict and its checks (``reports/gate.json``), what the change did to the
metrics and params (``dvc metrics diff`` / ``dvc params diff`` against the base branch, as
markdown tables) and links to the PNG plots that the evaluate stage rendered. CML posts the
file as the pull-request comment; it reads as well on a laptop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from plumbline.core.paths import Layout
from plumbline.model.importance import IMPORTANCE_CSV, read_table
from plumbline.model.importance import markdown_table as importance_table
from plumbline.model.verdict import GATE_FILE, GateResult
from plumbline.pipeline.model_card import MODEL_CARD_FILE
from plumbline.promotion.gate import markdown_table

REPORT_FILE = "report.md"

PLOTS = (
    ("roc", "ROC curve"),
    ("pr", "Precision-recall curve"),
    ("calibration", "Calibration"),
    ("confusion", "Confusion matrix"),
    ("importance", "Global feature importance"),
    ("fairness", "Selection rate, TPR and FPR per slice"),
)


@dataclass
class Base:
    ref: str
    commit: str


@dataclass
class ReportResult:
    path: Path
    base: Base | None
    gate_passed: bool | None
    images: list[Path]


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def base_candidates(base: str | None) -> list[str]:
    """The refs to try: ``--base``, else the pull request's base branch, else main."""
    if base:
        return [base]
    pr_base = os.environ.get("GITHUB_BASE_REF")
    if pr_base:
        return [f"origin/{pr_base}", pr_base]
    return ["origin/main", "main"]


def resolve_base(root: Path, base: str | None) -> Base | None:
    for ref in base_candidates(base):
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if commit:
            return Base(ref=ref, commit=commit)
    return None


def dvc(root: Path, *args: str) -> tuple[bool, str]:
    """Run a DVC command of this environment; (succeeded, stdout or the error)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return False, str(err)
    if out.returncode != 0:
        return False, (out.stderr or out.stdout).strip()
    return True, out.stdout.strip()


def _has_rows(table: str) -> bool:
    """DVC prints a bare header when nothing differs."""
    return len([line for line in table.splitlines() if line.startswith("|")]) > 2


def _error_block(command: str, error: str) -> str:
    return f"`{command}` failed:\n\n```\n{error}\n```"


def gate_section(path: Path) -> tuple[str, bool | None]:
    if not path.is_file():
        return (f"_The gate has not run: `plumbline gate` writes `{GATE_FILE}`._", None)
    result = GateResult.read(path)
    verdict = "**passed**" if result.passed else "**failed**"
    lines = [f"Gate {verdict}: {result.note}.", ""]
    if result.reasons:
        lines += [*(f"- {r}" for r in result.reasons), ""]
    lines.append(markdown_table(result))
    return "\n".join(lines), result.passed


def metrics_section(root: Path, base: Base | None) -> str:
    if base is None:
        ok, out = dvc(root, "metrics", "show", "--md")
        if not ok:
            return _error_block("dvc metrics show", out)
        return (
            f"Current values (no base to compare with):\n\n{out}"
            if _has_rows(out)
            else "_No metrics found._"
        )
    ok, out = dvc(root, "metrics", "diff", base.ref, "--md")
    if not ok:
        return _error_block(f"dvc metrics diff {base.ref}", out)
    return out if _has_rows(out) else f"_No metric changed against `{base.ref}`._"


def params_section(root: Path, base: Base | None) -> str:
    if base is None:
        return "_No base branch: nothing to compare the params with._"
    ok, out = dvc(root, "params", "diff", base.ref, "--md")
    if not ok:
        return _error_block(f"dvc params diff {base.ref}", out)
    return out if _has_rows(out) else f"_No parameter changed against `{base.ref}`._"


def plots_section(paths: Layout, output_dir: Path) -> tuple[str, list[Path]]:
    lines: list[str] = []
    images: list[Path] = []
    missing: list[str] = []
    for name, title in PLOTS:
        png = paths.figures / f"{name}.png"
        if png.is_file():
            rel = Path(os.path.relpath(png, output_dir)).as_posix()
            lines.append(f"### {title}\n\n![{title}]({rel})\n")
            images.append(png)
        else:
            missing.append(f"`{png.relative_to(paths.root).as_posix()}`")
    if missing:
        lines.append(f"_Not rendered (run `dvc repro`): {', '.join(missing)}._")
    return "\n".join(lines), images


def explanations_section(paths: Layout, output_dir: Path) -> str:
    """The top features of the global importance table and the link to the model card."""
    lines = []
    table = read_table(paths / IMPORTANCE_CSV)
    lines.append(
        importance_table(table)
        if table is not None
        else f"_No importance table (run `dvc repro`): `{IMPORTANCE_CSV}`._"
    )
    card = paths / MODEL_CARD_FILE
    if card.is_file():
        rel = Path(os.path.relpath(card, output_dir)).as_posix()
        lines += ["", f"Model card: [{MODEL_CARD_FILE}]({rel})"]
    return "\n".join(lines)


def write(paths: Layout, base: str | None = None, output: Path | None = None) -> ReportResult:
    root = paths.root
    output = output or root / REPORT_FILE
    resolved = resolve_base(root, base)
    head = _git(root, "rev-parse", "--short", "HEAD")
    gate_md, gate_passed = gate_section(paths / GATE_FILE)

    lines = ["# Plumbline model report", ""]
    where = f"commit `{head}` + workspace" if head else "the workspace (no commit yet)"
    if resolved is not None:
        lines.append(
            f"Compares {where} with the base branch `{resolved.ref}` (`{resolved.commit[:8]}`)."
        )
    else:
        tried = " or ".join(f"`{r}`" for r in base_candidates(base))
        lines.append(
            f"No base branch to compare with ({tried} not found; a first commit?). "
            f"Shows {where} only."
        )
    lines += [
        "",
        "## Gate",
        "",
        gate_md,
        "",
        "## Metrics",
        "",
        metrics_section(root, resolved),
        "",
        "## Params",
        "",
        params_section(root, resolved),
        "",
        "## Global explanations (test split)",
        "",
        explanations_section(paths, output.parent),
        "",
        "## Plots (test split)",
        "",
    ]
    plots_md, images = plots_section(paths, output.parent)
    lines += [plots_md, ""]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines))
    return ReportResult(path=output, base=resolved, gate_passed=gate_passed, images=images)
