"""`plumbline compare`'s logic: every candidate scored on the same test rows, the reference
first, intervals around each metric and paired intervals of each difference, and the report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support.paths import REPO
from support.serve import artifacts

from plumbline.core import skops_compat
from plumbline.core.contract import Contract
from plumbline.core.errors import PlumblineError
from plumbline.model.artifact import TRUSTED_TYPES
from plumbline.pipeline.compare import compare, markdown
from plumbline.pipeline.settings import load_pipeline_params


def _inputs() -> tuple[pd.DataFrame, pd.DataFrame, object]:
    a = artifacts()
    train = pd.read_parquet(a.root / "train.parquet")
    transformer = skops_compat.load(Path(a.root / "transformer.skops"), TRUSTED_TYPES)
    return train, a.test_frame(), transformer


def test_candidates_are_compared_with_the_reference_on_the_same_rows(contract: Contract) -> None:
    params = load_pipeline_params(REPO / "params.yaml")
    params = params.model_copy(
        update={
            "tune": params.tune.model_copy(update={"trials": 3}),
            "train": params.train.model_copy(
                update={"xgboost": params.train.xgboost.model_copy(update={"n_estimators": 30})}
            ),
        }
    )
    train, test, transformer = _inputs()
    result = compare(
        train,
        test,
        transformer,
        contract,
        params,
        ["logistic_regression", "xgboost"],
        tuned=True,
        untuned=True,
        resamples=200,
    )
    names = [c.name for c in result.candidates]
    assert names == [
        "logistic_regression",
        "logistic_regression (tuned)",
        "xgboost",
        "xgboost (tuned)",
    ]
    assert result.reference == "logistic_regression" and result.rows == len(test)
    reference = result.candidates[0]
    assert reference.versus_reference == {}
    for c in result.candidates:
        for metric in ("roc_auc", "pr_auc", "log_loss", "brier"):
            low, high = c.intervals[metric]
            assert low <= c.metrics[metric] <= high
    for c in result.candidates[1:]:
        auc = c.versus_reference["roc_auc"]
        assert auc["paired"] and auc["champion"] == pytest.approx(reference.metrics["roc_auc"])
        assert auc["challenger"] == pytest.approx(c.metrics["roc_auc"])
        assert auc["low"] <= auc["difference"] <= auc["high"]
    report = markdown(result)
    assert "| xgboost (tuned) |" in report and "(reference)" in report


def test_unknown_estimators_and_empty_selections_are_refused(contract: Contract) -> None:
    params = load_pipeline_params(REPO / "params.yaml")
    train, test, transformer = _inputs()
    with pytest.raises(PlumblineError, match="unknown estimators"):
        compare(train, test, transformer, contract, params, ["catboost"], True, True)
    with pytest.raises(PlumblineError, match="nothing to compare"):
        compare(train, test, transformer, contract, params, ["xgboost"], False, False)
