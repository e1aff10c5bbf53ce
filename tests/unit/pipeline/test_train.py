"""Train's fit: the training-split scores it returns (for the train metrics and the score
profile of the model card) are the ones the saved pipeline gives on the raw training rows.
Train itself, in memory: a fitted model, its card and the run's params and metrics, the same
for the same inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted
from support.paths import REPO
from support.serve import artifacts

from plumbline.core import skops_compat
from plumbline.core.contract import Contract
from plumbline.model.artifact import TRUSTED_TYPES, positive_proba
from plumbline.monitoring.settings import load_params
from plumbline.pipeline import train
from plumbline.pipeline.settings import load_pipeline_params


def test_fit_scores_the_training_rows_like_the_pipeline(contract: Contract) -> None:
    root = artifacts().root
    params = load_params(REPO / "params.yaml")
    rows = pd.read_parquet(root / "train.parquet")
    transformer = skops_compat.load(root / "transformer.skops", TRUSTED_TYPES)
    model, p = train.fit(rows, transformer, contract, params)
    features = contract.feature_columns(params.featurize.exclude_columns)
    assert len(p) == len(rows)
    np.testing.assert_array_equal(p, positive_proba(model, rows[features]))


def test_train_in_memory(contract: Contract) -> None:
    root = artifacts().root
    params = load_pipeline_params(REPO / "params.yaml")
    rows = pd.read_parquet(root / "train.parquet")

    def trained() -> train.Trained:
        # A transformer of its own per model: the model holds it.
        transformer = skops_compat.load(root / "transformer.skops", TRUSTED_TYPES)
        return train.train(rows, transformer, contract, params, {"train_md5": "f00"})

    out = trained()
    check_is_fitted(out.model[-1])
    features = contract.feature_columns(params.featurize.exclude_columns)
    card = out.metadata
    assert (card.contract, card.features, card.target) == (contract.name, features, "y")
    assert (card.estimator, card.data_hashes) == (params.train.estimator, {"train_md5": "f00"})
    assert len(card.score_profile["bin_fractions"]) == params.featurize.profile_quantiles
    y = contract.encode_target(rows["y"])
    p = positive_proba(out.model, rows[features])
    assert out.metrics["train_rows"] == len(rows)
    assert out.metrics["train_roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert 0.5 < out.metrics["train_roc_auc"] < 1.0
    assert out.params["train.estimator"] == params.train.estimator
    assert out.params["featurize.exclude_columns"] == params.featurize.exclude_columns
    assert skops_compat.dumps(trained().model) == skops_compat.dumps(out.model)  # reproducible
