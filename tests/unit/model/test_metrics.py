"""The test metrics (plumbline.model.metrics): the numpy implementations equal scikit-learn's
on the served model's test scores, ties and one-class cases included, and count-weighted
bootstrap resamples score like the resampled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from support.serve import artifacts

from plumbline.core.contract import Contract
from plumbline.model.artifact import load_model, positive_proba
from plumbline.model.metrics import ResampleScorer, classification_metrics, roc_auc, score_metrics


@pytest.fixture(scope="module")
def scored(contract: Contract) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    a = artifacts()
    test = a.test_frame()
    y = contract.encode_target(test[contract.target.column])
    return test, y, positive_proba(load_model(a.model), test[a.features])


def test_numpy_metrics_equal_the_evaluate_metrics(scored) -> None:
    _, y, p = scored
    rng = np.random.default_rng(3)
    for idx in [np.arange(len(y)), rng.integers(0, len(y), len(y))]:
        # rounded scores make ties, which both must handle the same way
        for scores in (p[idx], np.round(p[idx], 2)):
            fast = score_metrics(y[idx], scores, 0.5)
            slow = classification_metrics(y[idx], scores, 0.5)
            for name, value in fast.items():
                assert value == pytest.approx(slow[name], abs=1e-9), name


def test_roc_auc_equals_sklearn_on_ties_and_one_class() -> None:
    """The tie-block rank sum is sklearn's ROC AUC: scores rounded to few values, boolean or
    integer labels, a single row per class; undefined (NaN) with one class only."""
    rng = np.random.default_rng(5)
    for case in range(300):
        n = int(rng.integers(2, 2000))
        y = rng.random(n) < rng.uniform(0.02, 0.98)
        y[:2] = [True, False]  # both classes
        p = rng.random(n)
        if case % 2:
            p = np.round(p, int(rng.integers(0, 3)))
        labels = y if case % 3 else y.astype(np.int64)
        assert roc_auc(labels, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        # and to the bit, the Mann-Whitney formula over scipy's average ranks
        positives, negatives = int(y.sum()), int((~y).sum())
        rank_sum = rankdata(p)[y].sum()
        mann_whitney = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
        assert roc_auc(labels, p) == mann_whitney
    assert np.isnan(roc_auc(np.zeros(10, dtype=np.int64), rng.random(10)))
    assert np.isnan(roc_auc(np.array([0, 1]), np.array([0.2, np.nan])))


def test_count_weighted_resamples_score_like_the_resampled_rows(scored) -> None:
    """The bootstrap scores a resample as row counts over the once-sorted scores: the same
    metrics as resampling the rows (ties and rows drawn zero times included)."""
    _, y, p = scored
    rng = np.random.default_rng(11)
    for scores in (p, np.round(p, 2)):
        scorer = ResampleScorer(y, scores, 0.5)
        for _ in range(5):
            idx = rng.integers(0, len(y), len(y))
            weighted = scorer.score(scorer.counts(idx))
            assert weighted is not None
            expected = score_metrics(y[idx], scores[idx], 0.5)
            assert weighted.keys() == expected.keys()
            for name, value in expected.items():
                assert weighted[name] == pytest.approx(value, abs=1e-12), name
    one_class = np.flatnonzero(y == 0)[:50]
    assert ResampleScorer(y, p, 0.5).score(ResampleScorer(y, p, 0.5).counts(one_class)) is None
