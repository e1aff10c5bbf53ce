"""`plumbline gate`: absolute thresholds from params.yaml, and no regression beyond tolerance
against the champion re-scored on today's test split. Crafted metrics for the rules; real
small models and a temporary SQLite registry for the command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import ok, plumbline
from support.params import set_params
from support.promotion import (
    gate_json,
    train_candidate,
)

# Everything but age and marital status: a weak model that still clears loose thresholds.
TWO_FEATURES = [
    "duration",
    "job",
    "education",
    "default",
    "housing",
    "loan",
    "contact",
    "month",
    "day_of_week",
    "campaign",
    "pdays",
    "previous",
    "poutcome",
    "emp.var.rate",
    "cons.price.idx",
    "cons.conf.idx",
    "euribor3m",
    "nr.employed",
]


def test_gate_command_passes_then_fails_with_reasons(project: Path) -> None:
    train_candidate(project)

    out = ok("gate")

    assert "passed 3 of 3 checks" in out and "absolute thresholds only" in out
    written = gate_json(project)
    assert written["passed"] is True and written["champion"] is None
    assert [c["name"] for c in written["checks"]] == ["min_roc_auc", "min_pr_auc", "max_brier"]

    metrics_file = project / "reports/metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics.update(roc_auc=0.52, brier=0.31)
    metrics_file.write_text(json.dumps(metrics))

    code, _, err = plumbline("gate")

    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0] == (
        "plumbline gate: error: gate failed 2 of 3 checks (details in reports/gate.json):"
    )
    assert lines[1:] == [
        "  - roc_auc 0.5200 is below gate.min_roc_auc 0.5500",
        "  - brier 0.3100 is above gate.max_brier 0.3000",
    ]
    assert gate_json(project)["passed"] is False


def test_gate_command_fails_a_regression_against_the_champion(project: Path) -> None:
    champion_metrics = train_candidate(project)
    ok("gate")
    ok("promote")
    set_params(
        project,
        **{
            "gate.min_roc_auc": 0.5,
            "gate.min_pr_auc": 0.1,
            "gate.max_brier": 0.4,
            "gate.max_regression": 0.01,
        },
    )
    # The weak candidate's split holds only its two features: the champion is re-scored on the
    # same test rows with its own columns taken from the validated data.
    train_candidate(project, **{"featurize.exclude_columns": TWO_FEATURES})

    code, _, err = plumbline("gate")

    assert code == 1
    assert "worse than champion version 1" in err
    written = gate_json(project)
    by_name = {c["name"]: c for c in written["checks"]}
    assert all(by_name[n]["passed"] for n in ("min_roc_auc", "min_pr_auc", "max_brier"))
    assert not by_name["champion_roc_auc"]["passed"]
    assert written["champion"]["version"] == "1"
    assert written["champion"]["metrics"]["roc_auc"] == pytest.approx(
        champion_metrics["roc_auc"], abs=1e-6
    )
