"""The tune stage's logic: folds that never train on the future, a seeded search that gives
the same choice twice, the as-written values kept unless a trial beats them, train applying
the choice (and refusing a stale one), and search spaces validated with errors that name the
bad key."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from plumbline.core.errors import PlumblineError
from plumbline.core.settings import ConfigError, parse_params
from plumbline.model.settings import TrainConfig
from plumbline.pipeline.settings import PipelineParams, TuneConfig
from plumbline.pipeline.train import tuned_config
from plumbline.pipeline.tune import (
    FORWARD_CHAINING,
    STRATIFIED,
    cv_folds,
    forward_chaining_folds,
    tune,
)


def _timestamps(n: int, seed: int) -> np.ndarray:
    """Synthetic event times in row order, with repeats (several events in one second)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01T00:00:00")
    return start + np.cumsum(rng.integers(0, 4, size=n)).astype("timedelta64[s]")


@pytest.mark.parametrize(("n", "folds"), [(10, 2), (101, 3), (1000, 5), (7, 6)])
def test_forward_chaining_folds_never_train_on_later_rows(n: int, folds: int) -> None:
    times = _timestamps(n, seed=n)
    y = np.arange(n) % 2
    order, split = cv_folds(y, TuneConfig(folds=folds), time_ordered=True)
    assert order == FORWARD_CHAINING and len(split) == folds
    previous_valid_end = 0
    for fit_rows, valid_rows in split:
        assert len(fit_rows) and len(valid_rows)
        assert not set(fit_rows) & set(valid_rows)
        # Every training row is at or before every validation row, in time and in position.
        assert times[fit_rows].max() <= times[valid_rows].min()
        assert fit_rows.max() < valid_rows.min()
        # Forward chaining: each fold trains on everything before its validation block.
        assert np.array_equal(fit_rows, np.arange(valid_rows.min()))
        assert valid_rows.min() == previous_valid_end or previous_valid_end == 0
        previous_valid_end = valid_rows.max() + 1
    assert previous_valid_end == n  # the last block reaches the newest row


def test_too_few_rows_for_the_folds_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot make 3"):
        forward_chaining_folds(3, 3)


def test_rows_not_time_ordered_get_stratified_shuffled_folds() -> None:
    y = np.r_[np.zeros(90, dtype=int), np.ones(30, dtype=int)]
    order, split = cv_folds(y, TuneConfig(folds=3, seed=1), time_ordered=False)
    assert order == STRATIFIED
    seen = np.concatenate([valid for _, valid in split])
    assert sorted(seen) == list(range(120))  # each row validates once
    for _, valid in split:
        assert y[valid].mean() == pytest.approx(0.25)  # the class balance kept


def _data(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(size=n) > 0.8).astype(int)
    return x, y


SPACE: dict[str, Any] = {
    "logistic_regression": {
        "C": {"low": 0.0001, "high": 10.0, "log": True},
        "class_weight": {"choices": [None, "balanced"]},
    },
    "xgboost": {
        "max_depth": {"low": 1, "high": 4},
        "learning_rate": {"low": 0.05, "high": 0.5, "log": True},
    },
}


@pytest.mark.parametrize("estimator", ["logistic_regression", "xgboost"])
def test_the_search_is_a_pure_function_of_data_and_params(estimator: str) -> None:
    x, y = _data()
    train_cfg = TrainConfig(estimator=estimator, xgboost={"n_estimators": 20})  # type: ignore[arg-type]
    cfg = TuneConfig(trials=6, folds=3, space=SPACE, prune=True)
    first = tune(x, y, train_cfg, cfg, time_ordered=True)
    second = tune(x, y, train_cfg, cfg, time_ordered=True)
    assert first.best == second.best
    pd.testing.assert_frame_equal(first.trials, second.trials)
    best = first.best
    assert best["tuned"] and best["fold_order"] == FORWARD_CHAINING
    assert set(best["params"]) == set(SPACE[estimator])
    assert len(first.trials) == 6 and best["completed"] + best["pruned"] == 6
    # Never worse on the folds than the values as written.
    assert best["best_value"] >= best["as_written_value"]
    # The running best column is monotone.
    running = first.trials["best"].dropna().to_numpy()
    assert np.all(np.diff(running) >= 0)
    # train applies the choice, validated.
    applied = tuned_config(train_cfg, best)
    for name, value in best["params"].items():
        assert getattr(getattr(applied, estimator), name) == value


def test_no_trials_means_the_params_as_written() -> None:
    x, y = _data(50)
    out = tune(x, y, TrainConfig(), TuneConfig(trials=0, space=SPACE), time_ordered=True)
    assert out.best == {"estimator": "logistic_regression", "tuned": False, "params": {}}
    assert out.trials.empty
    assert tuned_config(TrainConfig(), out.best) == TrainConfig()


def test_a_choice_for_another_estimator_is_refused() -> None:
    choice = {"estimator": "xgboost", "tuned": True, "params": {"max_depth": 2}}
    with pytest.raises(Exception, match="run `plumbline tune`"):
        tuned_config(TrainConfig(estimator="lightgbm"), choice)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"xgbost": {}}, "space.xgbost: not an estimator"),
        ({"xgboost": {"max_dept": {"low": 2, "high": 4}}}, "space.xgboost.max_dept: not a hyper"),
        ({"xgboost": {"max_depth": {"low": 2.5, "high": 4}}}, "needs whole ends"),
        ({"xgboost": {"subsample": {"low": 0.5, "high": 1.5}}}, "subsample: 1.5 is not valid"),
        ({"lightgbm": {"num_leaves": {"low": 8, "high": 4}}}, "low must be below high"),
        ({"lightgbm": {"reg_lambda": {"low": 0.0, "high": 1.0, "log": True}}}, "log scale"),
        (
            {"logistic_regression": {"class_weight": {"choices": ["balanced", "heavy"]}}},
            "'heavy' is not valid",
        ),
        ({"xgboost": {"max_depth": {"lo": 2, "high": 4}}}, "lo"),
    ],
)
def test_a_bad_search_space_is_an_error_naming_the_key(space: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TuneConfig(trials=3, space=space)


def test_params_file_errors_name_the_tune_key(tmp_path: Any) -> None:
    raw = {
        "data": {"contract": "contracts/bank_marketing.yaml", "source": {"path": "x.csv"}},
        "tune": {"trials": 3, "space": {"xgboost": {"etaa": {"low": 0.1, "high": 0.2}}}},
    }
    with pytest.raises(ConfigError, match="tune") as err:
        parse_params(raw, PipelineParams, tmp_path / "params.yaml")
    assert "etaa" in str(err.value)
    raw["tune"] = {"trialz": 3}
    with pytest.raises(ConfigError, match="trialz"):
        parse_params(raw, PipelineParams, tmp_path / "params.yaml")


def test_train_rejects_unknown_booster_settings() -> None:
    with pytest.raises(ValidationError, match="max_dept"):
        TrainConfig(estimator="xgboost", xgboost={"max_dept": 3})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="estimator"):
        TrainConfig(estimator="catboost")  # type: ignore[arg-type]


def test_a_choice_searched_from_other_written_values_is_refused() -> None:
    """train.<estimator> edited after tune ran: train refuses the stale choice instead of
    silently fitting the values searched from the old ones."""
    x, y = _data(200)
    cfg = TuneConfig(trials=3, space=SPACE, prune=False)
    best = tune(x, y, TrainConfig(), cfg, time_ordered=True).best
    applied = tuned_config(TrainConfig(), best).logistic_regression
    assert {"C": applied.C, "class_weight": applied.class_weight} == best["params"]
    edited = TrainConfig.model_validate({"logistic_regression": {"C": 0.5}})
    with pytest.raises(PlumblineError, match=r"other values of train.logistic_regression \(C\)"):
        tuned_config(edited, best)
