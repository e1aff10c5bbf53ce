"""`plumbline report`: report.md with the gate table, `dvc metrics diff` / `dvc params diff`
against the base branch, and links to the PNG plots that exist. A tiny git + DVC repository
with two commits stands in for a pull request.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib
import pytest
import yaml
from support.cli import ok, run
from support.params import set_params
from support.paths import BANK_CONTRACT, REPO
from support.promotion import use_project

from plumbline.core import yamlfile

matplotlib.use("Agg")

DVC_YAML = {
    "stages": {
        "evaluate": {
            "cmd": "plumbline evaluate",
            "params": ["evaluate"],
            "metrics": [{"reports/metrics.json": {"cache": False}}],
        }
    }
}
METRICS = {"roc_auc": 0.70, "pr_auc": 0.48, "brier": 0.20, "rows": 800.0}


def dvc(root: Path, *args: str) -> str:
    return run(root, sys.executable, "-m", "dvc", *args, timeout=120)


def write_metrics(root: Path, **values: float) -> None:
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports/metrics.json").write_text(json.dumps({**METRICS, **values}, indent=2))


def render_png(path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project repository: params.yaml, a minimal dvc.yaml and metrics; not committed yet."""
    root = tmp_path / "project"
    root.mkdir()
    params = yamlfile.safe_load((REPO / "params.yaml").read_text())
    params["data"]["contract"] = str(BANK_CONTRACT)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    write_metrics(root)
    run(root, "git", "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    use_project(monkeypatch, root, tmp_path / "mlflow.db")
    return root


def image_links(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def test_report_diffs_against_the_base_branch(repo: Path) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "base")
    run(repo, "git", "checkout", "-q", "-b", "feature")
    write_metrics(repo, roc_auc=0.75, brier=0.18)
    set_params(repo, **{"evaluate.threshold": 0.4})
    run(repo, "git", "commit", "-qam", "a better model")
    ok("gate")  # empty registry: absolute thresholds only
    render_png(repo / "reports/figures/roc.png")
    render_png(repo / "reports/figures/pr.png")

    out = ok("report", "--base", "main")

    assert "against main" in out
    report = (repo / "report.md").read_text()
    assert "with the base branch `main`" in report
    # dvc metrics diff, as a markdown table with the old and new values
    assert re.search(r"\| reports/metrics\.json \| roc_auc\s+\| 0\.7\s+\| 0\.75\s+\| 0\.05", report)
    assert re.search(r"\| reports/metrics\.json \| brier\s+\| 0\.2\s+\| 0\.18", report)
    assert "pr_auc" not in report.split("## Metrics")[1].split("## Params")[0]  # unchanged
    assert re.search(r"\| params\.yaml\s+\| evaluate\.threshold\s+\| 0\.5\s+\| 0\.4", report)
    # the gate table
    assert "Gate **passed**" in report
    assert "| Check | Metric | Value | Needs | Result |" in report
    assert re.search(r"\| min_roc_auc \| roc_auc \| 0\.7500 \| >= 0\.7000 \| pass \|", report)
    # the plots that exist, and only those
    links = image_links(report)
    assert links == ["reports/figures/roc.png", "reports/figures/pr.png"]
    assert all((repo / link).is_file() for link in links)
    assert "`reports/figures/calibration.png`" in report  # named as not rendered


def test_report_without_a_base_branch_says_so(repo: Path, tmp_path: Path) -> None:
    render_png(repo / "reports/figures/confusion.png")
    output = tmp_path / "out/report.md"

    out = ok("report", "--output", str(output))

    assert "with no base branch" in out
    report = output.read_text()
    assert "No base branch to compare with (`origin/main` or `main` not found" in report
    assert "The gate has not run" in report
    # `dvc metrics show` of the workspace: brier, pr_auc, roc_auc, rows
    assert re.search(r"\| reports/metrics\.json \| 0\.2\s+\| 0\.48\s+\| 0\.7\s+\| 800\.0", report)
    links = image_links(report)
    assert len(links) == 1
    assert (output.parent / links[0]).resolve() == (repo / "reports/figures/confusion.png")
