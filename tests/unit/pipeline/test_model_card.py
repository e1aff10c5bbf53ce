"""The model card: every number in it is the one in metrics.json / validation.json, the
bootstrap intervals come from metrics computed exactly like evaluate's, and the registered
card adds what only registration knows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from support.modelcard import card_mismatches
from support.serve import artifacts

from plumbline.core.contract import Contract
from plumbline.model.artifact import load_model, positive_proba
from plumbline.model.fairness import fairness_report
from plumbline.model.importance import global_importance
from plumbline.model.metrics import ResampleScorer, classification_metrics, roc_auc, score_metrics
from plumbline.pipeline.model_card import CardInputs, bootstrap_intervals, registered_card, render


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


def _inputs(contract: Contract, scored, metrics: dict[str, float]) -> CardInputs:
    test, y, p = scored
    a = artifacts()
    return CardInputs(
        estimator="logistic_regression",
        contract=contract,
        features=a.features,
        excluded=["duration"],
        ingest={"source": {"kind": "csv", "path": "data/raw/x.csv"}, "content_sha256": "abc"},
        validation={
            "rows_in": 4119,
            "rows_valid": 4107,
            "rows_quarantined": 12,
            "checks": {"duplicate": 9, "range:age": 3},
        },
        split={
            "order": "Time-ordered by position",
            "train_fraction": 0.8,
            "test_fraction": 0.2,
            "train_rows": 3290,
            "test_rows": len(test),
            "train_range": "0-3289",
            "test_range": "3290-4118",
        },
        metrics=metrics,
        intervals=bootstrap_intervals(y, p, 0.5, seed=0),
        fairness=fairness_report(test, y, p, contract, 0.5),
        importance=global_importance(load_model(a.model), test, y, a.features, seed=0),
        data_hashes={"train_md5": "f00"},
    )


def test_card_numbers_match_the_reports(contract: Contract, scored) -> None:
    _, y, p = scored
    metrics = {k: round(v, 6) for k, v in classification_metrics(y, p, 0.5).items()}
    inputs = _inputs(contract, scored, metrics)
    card = render(inputs)
    assert card_mismatches(card, metrics, inputs.validation) == []
    # and the check can fail: a card with another number is caught
    wrong = card.replace(f"| roc_auc | {metrics['roc_auc']:.4f}", "| roc_auc | 0.1234")
    assert card_mismatches(wrong, metrics, inputs.validation)
    for section in (
        "## Intended use",
        "## Out-of-scope use",
        "## Training data",
        "## Split",
        "## Features",
        "## Metrics (test split)",
        "## Slices",
        "## Top global features",
        "## Known limitations",
        "## Lineage",
    ):
        assert section in card
    assert contract.use is not None and contract.use.intended in card
    assert "`duration`: Length of the last call" in card  # excluded, with why
    assert "`duplicate` 9, `range:age` 3" in card  # top quarantine reasons
    assert "### age_band" in card and "| [25, 40) |" in card
    assert "2010" in card  # the known limitation from the contract


def test_bootstrap_intervals_are_reproducible_and_cover_the_estimate(scored) -> None:
    _, y, p = scored
    first = bootstrap_intervals(y, p, 0.5, seed=0)
    assert first == bootstrap_intervals(y, p, 0.5, seed=0)
    point = score_metrics(y, p, 0.5)
    for name, (low, high) in first.items():
        assert low < point[name] < high, name
    # on these 824 rows: about ±0.06 for ROC AUC, far less than the metric's range
    for name in ("roc_auc", "brier"):
        low, high = first[name]
        assert high - low < 0.2, name


def test_registered_card_adds_version_commit_and_run() -> None:
    card = registered_card(
        "# Model card\n",
        "clf",
        "7",
        {"plumbline.git_commit": "abc123", "gate.verdict": "passed"},
        "r1",
    )
    assert "Registered model: clf" in card and "Registry version: 7" in card
    assert "`abc123`" in card and "`r1`" in card
    assert card.startswith("# Model card\n")
