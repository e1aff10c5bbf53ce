"""The lean scoring path computes what the fitted pipeline computes (within 1e-9), or is not
used: pipelines it does not reproduce are scored by the pipeline itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder
from support.paths import REPO
from support.serve import artifacts

from plumbline.core.contract import Contract
from plumbline.model.artifact import assemble, build_estimator, load_model, positive_proba
from plumbline.model.features import build_transformer
from plumbline.model.settings import FeaturizeConfig, TrainConfig
from plumbline.monitoring.settings import load_params
from plumbline.serving.scorer import (
    FastScorer,
    IncompatibleModel,
    compile_scorer,
    rows_frame,
    smoke_rows,
)


def _rows(frame: pd.DataFrame, features: list[str]) -> list[tuple[Any, ...]]:
    return [
        tuple(v.item() if hasattr(v, "item") else v for v in row)
        for row in frame[features].astype(object).itertuples(index=False, name=None)
    ]


def _fit(
    contract: Contract,
    features: list[str],
    train: pd.DataFrame,
    estimator: str = "logistic_regression",
) -> Any:
    transformer = build_transformer(contract, features, FeaturizeConfig())
    transformer.fit(train[features])
    model = build_estimator(TrainConfig(estimator=estimator))
    model.fit(
        transformer.transform(train[features]),
        contract.encode_target(train[contract.target.column]),
    )
    return assemble(transformer, model)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    bank = artifacts()
    return pd.read_parquet(bank.root / "train.parquet"), bank.test_frame(), bank.features


def test_fast_path_matches_pipeline_including_unknown_categories(contract: Contract, data) -> None:
    _, test, features = data
    model = load_model(artifacts().model)
    scorer = compile_scorer(model, contract, features)
    assert scorer.kind == "fast"
    frame = test[features].copy()
    frame.loc[frame.index[:25], "job"] = "astronaut"  # unknown: all job indicators 0
    frame.loc[frame.index[25:50], "month"] = "smarch"
    expected = positive_proba(model, frame)
    np.testing.assert_allclose(scorer.proba(_rows(frame, features)), expected, rtol=0, atol=1e-9)


def test_fast_path_with_gradient_boosting(contract: Contract, data) -> None:
    train, test, features = data
    model = _fit(contract, features, train, "hist_gradient_boosting")
    scorer = compile_scorer(model, contract, features)
    assert scorer.kind == "fast"
    np.testing.assert_allclose(
        scorer.proba(_rows(test, features)),
        positive_proba(model, test[features]),
        rtol=0,
        atol=1e-9,
    )


def test_missing_values_are_imputed_like_the_pipeline(contract: Contract, data) -> None:
    train, test, features = data
    columns = dict(contract.columns)
    for name in ("age", "euribor3m", "job"):
        columns[name] = columns[name].model_copy(update={"nullable": True})
    nullable = contract.model_copy(update={"columns": columns})
    train = train.copy()
    train["age"] = train["age"].astype("float64")
    train.loc[train.index[::7], ["age", "euribor3m"]] = np.nan
    train["job"] = train["job"].astype(object)
    train.loc[train.index[::5], "job"] = None
    model = _fit(nullable, features, train)
    scorer = compile_scorer(model, nullable, features)
    assert scorer.kind == "fast"
    rows = _rows(test.head(300), features)
    rows = [
        tuple(
            None if (i % 3 == 0 and features[j] in ("age", "euribor3m", "job")) else v
            for j, v in enumerate(row)
        )
        for i, row in enumerate(rows)
    ]
    expected = positive_proba(model, rows_frame(rows, features))
    np.testing.assert_allclose(scorer.proba(rows), expected, rtol=0, atol=1e-9)


def test_unsupported_steps_fall_back_to_the_pipeline(contract: Contract, data) -> None:
    train, test, features = data
    numeric = contract.numeric_columns(features)
    categorical = contract.categorical_columns(features)
    transformer = ColumnTransformer(
        [
            ("numeric", MinMaxScaler(), numeric),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                categorical,
            ),
        ]
    )
    transformer.fit(train[features])
    estimator = build_estimator(TrainConfig())
    estimator.fit(
        transformer.transform(train[features]),
        contract.encode_target(train[contract.target.column]),
    )
    model = assemble(transformer, estimator)
    scorer = compile_scorer(model, contract, features)
    assert scorer.kind == "pipeline"
    np.testing.assert_allclose(
        scorer.proba(_rows(test.head(50), features)),
        positive_proba(model, test[features].head(50)),
        atol=1e-12,
    )


def test_a_model_needing_other_columns_is_refused(contract: Contract, data) -> None:
    train, _, features = data
    model = _fit(contract, features, train)
    served = [f for f in features if f != "age"]  # an API that does not take "age"
    with pytest.raises(IncompatibleModel, match="age"):
        FastScorer(model, served)
    with pytest.raises(IncompatibleModel):
        compile_scorer(model, contract, served)


def test_smoke_rows_are_valid_records(contract: Contract) -> None:
    params = load_params(REPO / "params.yaml")
    features = contract.feature_columns(params.featurize.exclude_columns)
    record = contract.record_model(features)
    rows = smoke_rows(contract, features)
    for row in rows:
        record.model_validate(dict(zip(features, row, strict=True)))
    for name in contract.categorical_columns(features):
        seen = {row[features.index(name)] for row in rows}
        assert seen == set(contract.columns[name].categories or [])
