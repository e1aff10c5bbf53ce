"""The GitHub workflows, checked statically: valid workflow files, every `plumbline` command and
option they run exists, every tool comes from the project's dependencies or a setup action,
referenced files exist, and the steps run in the order the promotion flow needs.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import Any

import pytest
from support.paths import REPO

from plumbline.cli.main import build_parser
from plumbline.core import yamlfile
from plumbline.promotion.pr_report import REPORT_FILE

WORKFLOWS = REPO / ".github/workflows"
TIERS = ("unit", "integration", "e2e")
NAMES = ("ci.yml", "cml.yml", "promote.yml")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def load(name: str) -> dict[Any, Any]:
    workflow: dict[Any, Any] = yamlfile.safe_load((WORKFLOWS / name).read_text())
    return workflow


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    on = workflow["on"] if "on" in workflow else workflow[True]  # YAML 1.1 reads `on` as true
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return dict(on)


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def commands(step: dict[str, Any]) -> list[str]:
    """The shell commands of a `run:` step, one per line, comments dropped."""
    lines = []
    for line in str(step.get("run", "")).splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def index_of(workflow: dict[str, Any], prefix: str) -> int:
    for i, step in enumerate(steps(workflow)):
        if any(c.startswith(prefix) for c in commands(step)):
            return i
    raise AssertionError(f"no step runs {prefix!r}")


def step_running(workflow: dict[str, Any], prefix: str) -> dict[str, Any]:
    return steps(workflow)[index_of(workflow, prefix)]


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_valid_yaml_with_pinned_actions(name: str) -> None:
    workflow = load(name)
    assert triggers(workflow)
    for step in steps(workflow):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


@pytest.mark.parametrize("name", NAMES)
def test_plumbline_commands_and_options_exist(name: str) -> None:
    parser = build_parser()
    for step in steps(load(name)):
        for command in commands(step):
            if command.startswith("plumbline "):
                args = shlex.split(command)[1:]
                try:
                    parser.parse_args(args)
                except SystemExit:
                    pytest.fail(f"{name}: `{command}` is not a valid plumbline command")


@pytest.mark.parametrize("name", NAMES)
def test_tools_come_from_the_project_or_a_setup_action(name: str) -> None:
    workflow = load(name)
    optional = PYPROJECT["project"]["optional-dependencies"]
    # What the workflow installs: the base dependencies plus every extra it names.
    extras = {
        extra
        for s in steps(workflow)
        for c in commands(s)
        for group in re.findall(r"\.\[([a-z,]+)\]", c)
        for extra in group.split(",")
    }
    deps = " ".join(
        [*PYPROJECT["project"]["dependencies"], *(d for e in extras for d in optional.get(e, []))]
    )
    dev = " ".join(optional["dev"])
    provided = {
        "plumbline": "plumbline" in PYPROJECT["project"]["scripts"],
        "dvc": re.search(r"\bdvc\b", deps) is not None,
        "ruff": "ruff" in dev,
        "mypy": "mypy" in dev,
        "python -m pytest": "pytest" in dev,
        "cml": any(s.get("uses", "").startswith("iterative/setup-cml@") for s in steps(workflow)),
    }
    installs_dev = any('-e ".[dev]"' in c for s in steps(workflow) for c in commands(s))
    for step in steps(workflow):
        for command in commands(step):
            for tool, available in provided.items():
                if command.startswith(tool + " "):
                    assert available, f"{name}: `{command}` needs {tool}, which nothing installs"
                    if tool in ("ruff", "mypy", "python -m pytest"):
                        assert installs_dev, f"{name}: {tool} needs the [dev] extra installed"


@pytest.mark.parametrize("name", NAMES)
def test_referenced_files_exist(name: str) -> None:
    workflow = load(name)
    for step in steps(workflow):
        for path in str((step.get("with") or {}).get("cache-dependency-path", "")).split():
            assert (REPO / path).is_file(), f"{name}: cache key file {path} is missing"
        for command in commands(step):
            for constraint in re.findall(r"-c (\S+)", command):
                assert (REPO / constraint).is_file(), f"{name}: {constraint} is missing"
            if command.startswith("dvc repro"):
                assert (REPO / "dvc.yaml").is_file()


def test_ci_runs_lint_types_and_tests_with_caching() -> None:
    workflow = load("ci.yml")
    assert {"push", "pull_request"} <= set(triggers(workflow))
    index_of(workflow, "ruff check")
    index_of(workflow, "mypy")
    index_of(workflow, "python -m pytest")
    setups = [s for s in steps(workflow) if s.get("uses", "").startswith("actions/setup-python@")]
    assert setups and all(s["with"]["cache"] == "pip" for s in setups)
    index_of(workflow, "ruff format --check")
    # The tiers are separate jobs, and their coverage is combined and held to the floor.
    test_job = workflow["jobs"]["test"]
    assert test_job["strategy"]["matrix"]["tier"] == ["unit", "integration", "e2e"]
    pytest_step = next(s for s in test_job["steps"] if "pytest" in s.get("run", ""))
    assert "tests/${{ matrix.tier }}" in pytest_step["run"]
    assert set(TIERS) == {p.name for p in (REPO / "tests").iterdir() if p.name in TIERS}
    coverage_job = workflow["jobs"]["coverage"]
    assert coverage_job["needs"] == "test"
    assert any("--fail-under" in c for s in coverage_job["steps"] for c in commands(s))


def test_cml_reports_every_pull_request_and_fails_after_commenting() -> None:
    workflow = load("cml.yml")
    assert "pull_request" in triggers(workflow)
    assert workflow["permissions"]["pull-requests"] == "write"
    checkout = next(s for s in steps(workflow) if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the base branch is needed for the diffs

    order = [
        index_of(workflow, c)
        for c in ("dvc repro", "plumbline gate", "plumbline report", "cml comment update")
    ]
    assert order == sorted(order)
    gate = step_running(workflow, "plumbline gate")
    assert gate["continue-on-error"] is True and gate["id"]

    comment = step_running(workflow, "cml comment update")
    assert comment["env"]["REPO_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    report_args = shlex.split(commands(step_running(workflow, "plumbline report"))[0])
    assert "--output" not in report_args  # so the comment posts the file the report wrote
    assert shlex.split(commands(comment)[0])[-1] == REPORT_FILE

    final = steps(workflow)[-1]
    assert final["if"] == f"steps.{gate['id']}.outcome == 'failure'"
    assert "exit 1" in commands(final)
    assert order[-1] < len(steps(workflow)) - 1


def test_promote_runs_on_main_and_gates_before_promoting() -> None:
    workflow = load("promote.yml")
    assert triggers(workflow)["push"]["branches"] == ["main"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    order = [index_of(workflow, c) for c in ("dvc repro", "plumbline gate", "plumbline promote")]
    assert order == sorted(order)
    gate = step_running(workflow, "plumbline gate")
    assert gate["continue-on-error"] is True
    final = steps(workflow)[-1]
    assert final["if"] == f"steps.{gate['id']}.outcome == 'failure'"
    assert "exit 1" in commands(final)
