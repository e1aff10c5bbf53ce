"""Evaluate's scores and plot data: the test rows are transformed once and scored exactly as
the pipeline scores them, whatever its steps; the confusion figure counts the rows of
confusion.csv exactly as scikit-learn's confusion_matrix does, a label that never occurs
included. Evaluate itself, in memory: the metrics, plot data and audit reports, which the stage
writes as they are."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from support.paths import REPO
from support.serve import artifacts

from plumbline.core.contract import SOURCE_ROW, Contract
from plumbline.core.paths import layout
from plumbline.model.artifact import ModelMetadata, load_model, positive_proba, transform_and_score
from plumbline.model.fairness import FAIRNESS_FILE
from plumbline.model.metrics import classification_metrics, expected_calibration_error
from plumbline.pipeline import evaluate
from plumbline.pipeline.evaluate import (
    CONFUSION_LABELS,
    Evaluated,
    EvaluateInputs,
    confusion_counts,
    plot_data,
)
from plumbline.pipeline.model_card import MODEL_CARD_FILE
from plumbline.pipeline.settings import PipelineParams, load_pipeline_params


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


def _inputs(contract: Contract, params: PipelineParams) -> EvaluateInputs:
    a = artifacts()
    model = load_model(a.model)
    train = pd.read_parquet(a.root / "train.parquet")
    card = ModelMetadata(
        contract=contract.name,
        features=a.features,
        target="y",
        positive_label="yes",
        estimator=params.train.estimator,
        data_hashes={"train_md5": "f00"},
    )
    return EvaluateInputs(
        model=model,
        card=card,
        test=a.test_frame(),
        train_rows=train[SOURCE_ROW],
        ingest={"source": {"kind": "csv", "path": "data/raw/x.csv"}},
        validation={},
    )


@pytest.fixture(scope="module")
def evaluated(contract: Contract) -> tuple[EvaluateInputs, PipelineParams, Evaluated]:
    params = load_pipeline_params(REPO / "params.yaml")
    inputs = _inputs(contract, params)
    return inputs, params, evaluate.evaluate(inputs, contract, params)


def test_evaluate_in_memory(contract: Contract, evaluated) -> None:
    inputs, params, out = evaluated
    test, features = inputs.test, artifacts().features
    y = contract.encode_target(test["y"])
    p = positive_proba(inputs.model, test[features])
    threshold = params.evaluate.threshold
    expected = classification_metrics(y, p, threshold)
    assert out.metrics == pytest.approx(
        {**expected, "ece": expected_calibration_error(y, p, params.evaluate.calibration_bins)}
    )
    assert out.metrics["rows"] == len(test)
    assert set(out.plots) == {"roc", "pr", "calibration", "confusion"}
    assert len(out.plots["confusion"]) == len(test)
    assert (out.plots["confusion"]["predicted"] == "positive").sum() == (p >= threshold).sum()
    assert len(out.plots["calibration"]) <= params.evaluate.calibration_bins
    # The audit: slices, importance per feature, and a card with these numbers.
    assert set(out.audit.fairness["slices"]) == set(contract.slices) != set()
    assert sorted(out.audit.importance["feature"]) == sorted(features)
    card = out.audit.model_card
    assert f"| roc_auc | {round(out.metrics['roc_auc'], 6):.4f} |" in card
    assert f"Train: {len(inputs.train_rows):,} rows" in card
    assert "_No validation record (reports/validation.json): run `dvc repro`._" in card
    assert "- train_md5: `f00`" in card


def test_the_stage_writes_what_evaluate_returns(
    tmp_path: Path, contract: Contract, evaluated
) -> None:
    inputs, params, out = evaluated
    a = artifacts()
    paths = layout(tmp_path)
    for path in (paths.model, paths.test_split, paths.ingest_record):
        path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(a.model, paths.model)
    inputs.card.write(paths.model_metadata)
    shutil.copy(a.test_split, paths.test_split)
    shutil.copy(a.root / "train.parquet", paths.train_split)
    paths.ingest_record.write_text(json.dumps(inputs.ingest))

    written = evaluate.run(params, contract, paths, mlflow_logging=False)
    assert written.metrics == out.metrics
    assert json.loads(paths.metrics.read_text()) == {k: round(v, 6) for k, v in out.metrics.items()}
    for name, frame in out.plots.items():
        pd.testing.assert_frame_equal(
            pd.read_csv(paths.plots / f"{name}.csv"),
            pd.read_csv(io.StringIO(frame.to_csv(index=False, float_format="%.6f"))),
        )
    assert json.loads((paths / FAIRNESS_FILE).read_text()) == json.loads(
        json.dumps(out.audit.fairness)
    )
    assert (paths / MODEL_CARD_FILE).read_text() == out.audit.model_card
    figures = ("roc", "pr", "calibration", "confusion", "importance", "fairness")
    assert sorted(p.name for p in paths.figures.iterdir()) == sorted(f"{f}.png" for f in figures)
    assert not paths.run_record.exists()  # no MLflow run, so no lineage record was completed
