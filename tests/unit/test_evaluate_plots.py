"""Evaluate's plot data: the confusion figure counts the rows of confusion.csv exactly as
scikit-learn's confusion_matrix does, a label that never occurs included."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from plumbline.stages.evaluate import CONFUSION_LABELS, confusion_counts, plot_data


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
