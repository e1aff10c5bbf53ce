"""CBPE (plumbline.monitoring.cbpe): live ROC AUC, precision and recall estimated from the
scores alone, and withheld for a model that is not calibrated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client.core import GaugeMetricFamily
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from plumbline.model.metrics import expected_calibration_error
from plumbline.monitoring import cbpe

MAX_ECE = 0.05
WEIGHTS = np.array([1.2, -0.8, 0.5])


def sample(rows: int, loc: float, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs from N(loc, scale); the outcome's dependence on them never changes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc, scale, size=(rows, 3))
    p = 1 / (1 + np.exp(-(x @ WEIGHTS - 1.0)))
    return x, (rng.random(rows) < p).astype(np.int64)


def fitted() -> tuple[LogisticRegression, float]:
    """A logistic regression on the reference period and its calibration error on a test
    split of that period."""
    x, y = sample(6000, 0.0, 1.0, 0)
    model = LogisticRegression().fit(x[:4000], y[:4000])
    ece = expected_calibration_error(y[4000:], model.predict_proba(x[4000:])[:, 1], 10)
    return model, ece


def gauges(est: cbpe.Estimate) -> dict[str, list[float]]:
    def gauge(name: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, cbpe.ESTIMATE_METRICS[name], labels=labels)

    return {f.name: [s.value for s in f.samples] for f in cbpe.families(est, gauge)}


def test_expected_calibration_error_is_zero_for_calibrated_bins_and_large_when_shifted() -> None:
    p = np.repeat([0.1, 0.5, 0.9], 1000)
    y = np.concatenate([np.arange(1000) < k for k in (100, 500, 900)]).astype(int)
    assert expected_calibration_error(y, p, 10) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(y, np.clip(p + 0.2, 0, 1), 10) == pytest.approx(0.2, abs=0.1)


def test_the_expected_confusion_matrix_sums_the_probabilities() -> None:
    tp, fp, fn, tn = cbpe.expected_confusion(np.array([0.9, 0.6, 0.3, 0.1]), 0.5)
    assert (tp, fp, fn, tn) == pytest.approx((1.5, 0.5, 0.4, 1.6))


def test_estimate_on_a_shifted_window_is_within_003_of_the_realised_auc() -> None:
    model, ece = fitted()
    assert ece <= MAX_ECE  # a well-specified logistic regression is calibrated
    for seed, (loc, scale) in enumerate([(0.8, 1.0), (-0.5, 1.6), (1.2, 0.6)], start=1):
        x, y = sample(4000, loc, scale, seed)  # covariate shift: the inputs moved
        p = model.predict_proba(x)[:, 1]
        est = cbpe.estimate(p, "2", 0.5, ece, MAX_ECE, 200)
        assert est.available, est.reason
        realised = roc_auc_score(y, p)
        assert est.roc_auc == pytest.approx(realised, abs=0.03)
        pred = (p >= 0.5).astype(int)
        assert est.precision == pytest.approx(precision_score(y, pred), abs=0.03)
        assert est.recall == pytest.approx(recall_score(y, pred), abs=0.03)
        exported = gauges(est)
        assert exported["plumbline_live_estimated_roc_auc"] == [est.roc_auc]
        assert exported["plumbline_live_estimate_available"] == [1.0]


def test_a_miscalibrated_model_gets_no_estimate_and_the_reason_says_so() -> None:
    model, _ = fitted()
    x_ref, y_ref = sample(2000, 0.0, 1.0, 9)

    def overconfident(x: np.ndarray) -> np.ndarray:
        # The same ranking, probabilities pushed towards 0 and 1 and upwards.
        logit = np.log(model.predict_proba(x)[:, 1] / model.predict_proba(x)[:, 0])
        return np.asarray(1 / (1 + np.exp(-(3 * logit + 1.5))))

    ece = expected_calibration_error(y_ref, overconfident(x_ref), 10)
    assert ece > MAX_ECE
    x, _ = sample(2000, 0.8, 1.0, 10)
    est = cbpe.estimate(overconfident(x), "3", 0.5, ece, MAX_ECE, 200)
    assert not est.available and est.roc_auc is None
    assert "poorly calibrated" in est.reason and f"{ece:.4f}" in est.reason
    assert "monitor.estimate.max_ece" in est.reason
    exported = gauges(est)
    assert exported["plumbline_live_estimated_roc_auc"] == []
    assert exported["plumbline_live_estimated_precision"] == []
    assert exported["plumbline_live_estimate_available"] == [0.0]
    assert exported["plumbline_model_test_ece"] == [pytest.approx(ece)]


def test_no_estimate_without_a_calibration_figure_or_enough_rows() -> None:
    p = np.full(500, 0.3)
    assert "no 'ece'" in cbpe.estimate(p, "1", 0.5, None, MAX_ECE, 200).reason
    few = cbpe.estimate(p[:50], "1", 0.5, 0.01, MAX_ECE, 200)
    assert not few.available and "monitor.estimate.min_rows" in few.reason


def test_train_calibration_wraps_the_estimator_and_the_artifact_loads(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import StandardScaler

    from plumbline.model.artifact import (
        assemble,
        build_estimator,
        load_model,
        positive_proba,
        save_model,
    )
    from plumbline.model.settings import TrainConfig

    x, y = sample(3000, 0.0, 1.0, 3)
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    # Balanced class weights push the plain model's probabilities up: miscalibrated.
    transformer = ColumnTransformer([("n", StandardScaler(), ["a", "b", "c"])]).fit(frame)
    eces = {}
    for method in ("none", "sigmoid", "isotonic"):
        cfg = TrainConfig(calibration=method)  # type: ignore[arg-type]
        cfg = cfg.model_copy(
            update={
                "logistic_regression": cfg.logistic_regression.model_copy(
                    update={"class_weight": "balanced"}
                )
            }
        )
        estimator = build_estimator(cfg).fit(transformer.transform(frame[:2000]), y[:2000])
        path = tmp_path / f"{method}.skops"
        save_model(assemble(transformer, estimator), path)
        p = positive_proba(load_model(path), frame[2000:])  # skops trusts every fitted part
        eces[method] = expected_calibration_error(y[2000:], p, 10)
    assert eces["none"] > MAX_ECE
    assert eces["sigmoid"] < eces["none"] / 2 and eces["isotonic"] < eces["none"] / 2
