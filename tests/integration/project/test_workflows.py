"""The GitHub workflows, checked statically: valid workflow files, every `plumbline` command and
option they run exists, every tool comes from the project's dependencies or a setup action,
referenced files exist, and the steps run in the order the promotion flow needs.
"""

from __future__ import annotations

import subprocess
import tomllib

from support.paths import REPO, dev_tool

WORKFLOWS = REPO / ".github/workflows"
NAMES = ("ci.yml", "cml.yml", "promote.yml")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_workflows_match_the_github_workflow_schema() -> None:
    exe = dev_tool("check-jsonschema")
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.github-workflows", *(str(WORKFLOWS / n) for n in NAMES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
