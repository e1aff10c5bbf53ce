"""Evaluate's scores and plot data: the test rows are transformed once and scored exactly as
the pipeline scores them, whatever its steps; the confusion figure counts the rows of
confusion.csv exactly as scikit-learn's confusion_matrix does, a label that never occurs
included."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from support.serve import artifacts

from plumbline.core.contract import Contract
from plumbline.model.artifact import load_model, positive_proba, transform_and_score
from plumbline.pipeline.evaluate import CONFUSION_LABELS, confusion_counts, plot_data


def test_transform_and_score_equals_the_pipeline(contract: Contract) -> None:
    a = artifacts()
    test = a.test_frame()[a.features]
    model = load_model(a.model)
    # a pipeline with a step between the transformer and the estimator scores the same way
    train = pd.read_parquet(a.root / "train.parquet")
    y = contract.encode_target(train[contract.target.column])
    transformer = model[0]
    three_steps = Pipeline(
        [("features", transformer), ("scale", StandardScaler()), ("lr", LogisticRegression())]
    ).fit(train[a.features], y)
    for pipeline in (model, three_steps):
        transformed, p = transform_and_score(pipeline, test)
        np.testing.assert_array_equal(p, positive_proba(pipeline, test))
        np.testing.assert_array_equal(transformed, pipeline[:-1].transform(test))


def test_confusion_counts_equal_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(3000) < 0.2).astype(np.int64)
    p = np.clip(0.6 * y + rng.normal(0.2, 0.2, len(y)), 0, 1)
    for threshold in (0.5, 1.1):  # 1.1: nothing is predicted positive
        conf = plot_data(y, p, threshold, bins=10)["confusion"]
        actual, predicted = conf.actual.to_numpy(), conf.predicted.to_numpy()
        counts = confusion_counts(actual, predicted, CONFUSION_LABELS)
        expected = confusion_matrix(actual, predicted, labels=CONFUSION_LABELS)
        np.testing.assert_array_equal(counts, expected)
        assert counts.sum() == len(y)
    assert counts[:, 1].sum() == 0
