"""Train's fit: the training-split scores it returns (for the train metrics and the score
profile of the model card) are the ones the saved pipeline gives on the raw training rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from support.paths import REPO
from support.serve import artifacts

from plumbline.core import skops_compat
from plumbline.core.contract import Contract
from plumbline.model.artifact import TRUSTED_TYPES, positive_proba
from plumbline.monitoring.settings import load_params
from plumbline.pipeline import train


def test_fit_scores_the_training_rows_like_the_pipeline(contract: Contract) -> None:
    root = artifacts().root
    params = load_params(REPO / "params.yaml")
    rows = pd.read_parquet(root / "train.parquet")
    transformer = skops_compat.load(root / "transformer.skops", TRUSTED_TYPES)
    model, p = train.fit(rows, transformer, contract, params)
    features = contract.feature_columns(params.featurize.exclude_columns)
    assert len(p) == len(rows)
    np.testing.assert_array_equal(p, positive_proba(model, rows[features]))
