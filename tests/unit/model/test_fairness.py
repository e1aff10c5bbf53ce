"""Per-slice metrics and disparities: a synthetic dataset built with a known disparity is
reported within 0.01, the gate's optional limits fail naming the slice, and the default
configuration adds no fairness check (so the bank data passes as before)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from support.serve import artifacts

from plumbline.core.contract import Contract, SliceSpec
from plumbline.model.artifact import load_model, positive_proba
from plumbline.model.fairness import fairness_checks, fairness_report, plot_rows, slice_values
from plumbline.promotion.gate import decide
from plumbline.promotion.settings import FairnessLimits, GateConfig

SYNTHETIC = {
    "name": "synthetic",
    "target": {"column": "y", "positive": "yes"},
    "rows_time_ordered": False,
    "columns": {
        "age": {"type": "integer", "min": 0, "max": 120},
        "group": {"type": "category", "categories": ["a", "b"]},
        "y": {"type": "category", "categories": ["no", "yes"]},
    },
    "slices": {"grp": {"column": "group"}, "age_band": {"column": "age", "bins": [0, 40, 120]}},
}

# group a: selected 60 % of the time, b: 30 %; TPR 0.8 vs 0.5, FPR 0.4 vs 0.2
RATES = {"a": {"tpr": 0.8, "fpr": 0.4}, "b": {"tpr": 0.5, "fpr": 0.2}}


def synthetic(n: int = 40_000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Base rate 1/3 in both groups; a model whose TPR and FPR differ by group."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], size=n)
    y = (rng.random(n) < 1 / 3).astype(np.int64)
    tpr = np.where(group == "a", RATES["a"]["tpr"], RATES["b"]["tpr"])
    fpr = np.where(group == "a", RATES["a"]["fpr"], RATES["b"]["fpr"])
    chosen = rng.random(n) < np.where(y == 1, tpr, fpr)
    # scores: selected rows above the 0.5 threshold, the others below
    p = np.where(chosen, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.5, n))
    age = rng.integers(18, 90, n)
    return pd.DataFrame({"group": group, "age": age}), y, p


def test_a_known_disparity_is_reported_within_0_01() -> None:
    frame, y, p = synthetic()
    report = fairness_report(frame, y, p, Contract.model_validate(SYNTHETIC), 0.5)
    table = report["slices"]["grp"]
    # selection rate = TPR/3 + FPR*2/3: a 0.5333, b 0.3
    sel = {g: r["tpr"] / 3 + r["fpr"] * 2 / 3 for g, r in RATES.items()}
    assert abs(table["demographic_parity_difference"] - (sel["a"] - sel["b"])) < 0.01
    assert abs(table["demographic_parity_ratio"] - sel["b"] / sel["a"]) < 0.01
    # equalized odds difference: the larger of |ΔTPR| = 0.3 and |ΔFPR| = 0.2
    assert abs(table["equalized_odds_difference"] - 0.3) < 0.01
    for g, rates in RATES.items():
        entry = table["groups"][g]
        assert abs(entry["tpr"] - rates["tpr"]) < 0.01
        assert abs(entry["fpr"] - rates["fpr"]) < 0.01
        assert abs(entry["positive_rate"] - 1 / 3) < 0.01
        assert abs(entry["selection_rate"] - sel[g]) < 0.01
    assert table["groups"]["a"]["rows"] + table["groups"]["b"]["rows"] == len(y)
    assert table["highest_selection_group"] == "a" and table["lowest_selection_group"] == "b"
    # age is independent of the decision: no disparity between its bands
    assert report["slices"]["age_band"]["demographic_parity_difference"] < 0.02
    assert set(report["slices"]["age_band"]["groups"]) == {"[0, 40)", "[40, 120)"}


def test_bins_are_half_open_and_outliers_and_missing_are_named() -> None:
    spec = SliceSpec(column="age", bins=[0, 25, 40])
    labels = slice_values(pd.Series([0, 24, 25, 39, 40, None, -3]), spec)
    assert list(labels) == [
        "[0, 25)",
        "[0, 25)",
        "[25, 40)",
        "[25, 40)",
        "other",
        "missing",
        "other",
    ]
    assert list(slice_values(pd.Series(["x", None]), SliceSpec(column="c"))) == ["x", "missing"]


def test_slices_are_checked_against_the_contract() -> None:
    bad_column = {**SYNTHETIC, "slices": {"s": {"column": "nope"}}}
    with pytest.raises(ValidationError, match="nope"):
        Contract.model_validate(bad_column)
    binned_category = {**SYNTHETIC, "slices": {"s": {"column": "group", "bins": [0, 1]}}}
    with pytest.raises(ValidationError, match="bins apply only"):
        Contract.model_validate(binned_category)
    with pytest.raises(ValidationError, match="increasing"):
        SliceSpec(column="age", bins=[10, 5])


def test_gate_limits_fail_naming_the_slice() -> None:
    frame, y, p = synthetic()
    report = fairness_report(frame, y, p, Contract.model_validate(SYNTHETIC), 0.5)
    metrics = {"roc_auc": 0.9, "pr_auc": 0.8, "brier": 0.1}
    limits = FairnessLimits(max_demographic_parity_difference=0.1)
    result = decide(metrics, GateConfig(fairness=limits), None, "m", fairness=report)
    assert not result.passed
    failed = [c for c in result.checks if not c.passed]
    assert [c.name for c in failed] == ["fairness_grp_demographic_parity_difference"]
    assert "slice 'grp'" in failed[0].reason and "'a'" in failed[0].reason
    # age bands are within the limit and pass
    assert any(c.name == "fairness_age_band_demographic_parity_difference" for c in result.checks)
    looser = FairnessLimits(
        max_demographic_parity_difference=0.3, max_equalized_odds_difference=0.25
    )
    result = decide(metrics, GateConfig(fairness=looser), None, "m", fairness=report)
    assert [c.name for c in result.checks if not c.passed] == [
        "fairness_grp_equalized_odds_difference"
    ]
    # limits but no report: fail, not pass silently
    result = decide(metrics, GateConfig(fairness=limits), None, "m", fairness=None)
    assert [c.name for c in result.checks if not c.passed] == ["fairness_report"]


def test_default_config_has_no_fairness_limits_and_bank_data_passes(contract: Contract) -> None:
    a = artifacts()
    test = a.test_frame()
    model = load_model(a.model)
    y = contract.encode_target(test[contract.target.column])
    p = positive_proba(model, test[a.features])
    report = fairness_report(test, y, p, contract, 0.5)
    assert set(report["slices"]) == {"age_band", "marital"}
    assert sum(g["rows"] for g in report["slices"]["marital"]["groups"].values()) == len(test)
    assert GateConfig().fairness is None
    assert fairness_checks(report, GateConfig().fairness) == []
    metrics = {"roc_auc": 0.9, "pr_auc": 0.8, "brier": 0.1}
    assert decide(metrics, GateConfig(), None, "m", fairness=report).passed
    assert len(plot_rows(report)) == sum(len(s["groups"]) for s in report["slices"].values())


def test_a_contract_without_slices_reports_none() -> None:
    contract = Contract.model_validate({k: v for k, v in SYNTHETIC.items() if k != "slices"})
    frame, y, p = synthetic(1000)
    report = fairness_report(frame, y, p, contract, 0.5)
    assert report == {"threshold": 0.5, "slices": {}}
    assert plot_rows(report).empty
