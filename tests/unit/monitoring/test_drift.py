"""Drift statistics: exact values on hand-made distributions, and verdicts on the real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.paths import REPO

from plumbline.core.contract import load_contract
from plumbline.model.features import numeric_profile, reference_profile
from plumbline.monitoring.drift import (
    DriftThresholds,
    bin_fractions,
    categorical_drift,
    compare,
    numeric_drift,
    psi,
    write_report,
)


def test_psi_exact_values() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    expected = sum((a - 0.25) * math.log(a / 0.25) for a in (0.1, 0.2, 0.3, 0.4))
    assert psi(np.full(4, 0.25), np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(expected)
    assert expected == pytest.approx(0.228218, abs=1e-6)
    # An empty bin is floored, not infinite.
    assert math.isfinite(psi(np.array([0.5, 0.5]), np.array([1.0, 0.0])))


def test_bin_fractions_put_outliers_in_the_outer_bins() -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    fractions = bin_fractions(np.array([-5.0, 0.5, 1.5, 2.5, 99.0]), edges)
    assert fractions.tolist() == [0.4, 0.2, 0.4]


def test_numeric_drift_on_hand_made_samples() -> None:
    rng = np.random.default_rng(0)
    reference = numeric_profile(rng.normal(0, 1, 5000), 10, 2000, rng)
    same = numeric_drift("x", reference, rng.normal(0, 1, 1000), DriftThresholds())
    assert not same.drifted and same.psi < 0.05
    shifted = numeric_drift("x", reference, rng.normal(3, 1, 1000), DriftThresholds())
    assert shifted.drifted and shifted.psi > 1 and shifted.p_value < 1e-10
    disjoint = numeric_drift(
        "x",
        {"bin_edges": [0, 1, 2], "bin_fractions": [0.5, 0.5], "sample": [0.1, 0.2, 0.3]},
        np.array([10.0, 11.0, 12.0]),
        DriftThresholds(),
    )
    assert disjoint.statistic == 1.0  # KS: the samples do not overlap at all


def test_categorical_drift_exact_values() -> None:
    reference = {"frequencies": {"a": 0.5, "b": 0.5, "c": 0.0}}
    same = categorical_drift("c", reference, pd.Series(["a", "b"] * 200), DriftThresholds())
    assert same.psi == pytest.approx(0.0, abs=1e-12)
    assert same.js_distance == pytest.approx(0.0, abs=1e-7)
    assert not same.drifted
    moved = categorical_drift(
        "c", {"frequencies": {"a": 1.0, "b": 0.0}}, pd.Series(["b"] * 400), DriftThresholds()
    )
    assert moved.js_distance == pytest.approx(1.0)  # disjoint distributions, base-2 JS
    assert moved.drifted


@pytest.fixture(scope="module")
def bank() -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    frame = pd.read_csv(REPO / "data/raw/bank-additional-full.csv", sep=";")
    n_train = int(len(frame) * 0.8)
    train, late = frame.iloc[:n_train], frame.iloc[n_train:]
    features = contract.feature_columns(["duration"])
    return reference_profile(train, contract, features, 10, 2000), train, late


def test_no_alarm_on_a_second_sample_from_the_training_period(bank) -> None:
    profile, train, _ = bank
    report = compare(profile, train.sample(2000, random_state=7), DriftThresholds())
    assert report.enough_rows
    assert report.drifted_features == []


def test_alarm_on_the_late_period(bank, tmp_path: Path) -> None:
    profile, _, late = bank
    report = compare(profile, late.tail(2000), DriftThresholds())
    by_name = {f.feature: f for f in report.features}
    for feature in ("euribor3m", "emp.var.rate", "nr.employed"):
        assert by_name[feature].drifted
        assert by_name[feature].psi > 1.0
    md = write_report(report, tmp_path)
    text = md.read_text()
    assert "euribor3m" in text and "**yes**" in text
    assert (tmp_path / "drift.png").stat().st_size > 1000


def test_too_few_rows_gives_no_verdict(bank) -> None:
    profile, train, _ = bank
    report = compare(profile, train.head(50), DriftThresholds(min_rows=200))
    assert not report.enough_rows and report.features == []
