"""The model card: every number in it is the one in metrics.json / validation.json, the
bootstrap intervals come from metrics computed exactly like evaluate's, and the registered
card adds what only registration knows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.modelcard import card_mismatches
from support.serve import artifacts

from plumbline.core.contract import Contract
from plumbline.model.artifact import load_model, positive_proba
from plumbline.model.fairness import fairness_report
from plumbline.model.importance import global_importance
from plumbline.model.metrics import classification_metrics, score_metrics
from plumbline.pipeline.model_card import CardInputs, bootstrap_intervals, registered_card, render


@pytest.fixture(scope="module")
def scored(contract: Contract) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    a = artifacts()
    test = a.test_frame()
    y = contract.encode_target(test[contract.target.column])
    return test, y, positive_proba(load_model(a.model), test[a.features])


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
