"""Evaluate: score the model on the time-ordered test split.

Writes ``reports/metrics.json`` (DVC metrics), the data behind the ROC, PR, confusion and
calibration plots (DVC plots) and PNG renderings of them (viewable offline), and the audit
reports of :mod:`plumbline.pipeline.audit` (fairness per slice, global importance, the model
card); logs the model's MLflow run: train's params and metrics from the lineage record, the
model, the test metrics and the figures.

:func:`evaluate` computes the metrics, the plot data and the reports in memory; :func:`run`,
the stage, reads the model and the records the card cites, writes every report and figure and
logs to MLflow.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    precision_recall_curve,
    roc_curve,
)

from plumbline.core import skops_compat
from plumbline.core.artifacts import write_json
from plumbline.core.contract import SOURCE_ROW, Contract
from plumbline.core.errors import need
from plumbline.core.paths import Layout
from plumbline.core.timing import phase
from plumbline.core.tracking import md5_file
from plumbline.model.artifact import (
    TRUSTED_TYPES,
    ModelMetadata,
    load_model,
    positive_proba,
    transform_and_score,
)
from plumbline.model.metrics import classification_metrics, expected_calibration_error
from plumbline.model.runrecord import (
    COMMIT_TAG,
    MODEL_MD5_TAG,
    MODEL_URI_TAG,
    RunRecord,
    current_record,
    find_train_run,
)
from plumbline.pipeline.audit import Audit, audit, write_reports
from plumbline.pipeline.settings import PipelineParams

log = logging.getLogger(__name__)
CONFUSION_LABELS = ["negative", "positive"]


@dataclass
class EvaluateInputs:
    model: Any  # the scikit-learn Pipeline train saved
    card: ModelMetadata  # models/model.json: the estimator and the data hashes
    test: pd.DataFrame
    # What the model card tells of the earlier stages: the training split's source rows, and
    # the ingest and validation records ({} when that stage has not run here).
    train_rows: pd.Series
    ingest: dict[str, Any]
    validation: dict[str, Any]


@dataclass
class Evaluated:
    metrics: dict[str, float]  # reports/metrics.json holds them rounded to 6 places
    plots: dict[str, pd.DataFrame]  # reports/plots/<name>.csv
    audit: Audit  # fairness, importance, the model card


def _thin(frame: pd.DataFrame, max_points: int = 500) -> pd.DataFrame:
    """Curves with tens of thousands of points make plots slow and diffs unreadable."""
    if len(frame) <= max_points:
        return frame
    idx = np.unique(np.linspace(0, len(frame) - 1, max_points).round().astype(int))
    return frame.iloc[idx]


def plot_data(y: np.ndarray, p: np.ndarray, threshold: float, bins: int) -> dict[str, pd.DataFrame]:
    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    negative, positive = CONFUSION_LABELS
    labels = np.where(y == 1, positive, negative)
    predicted = np.where(p >= threshold, positive, negative)
    return {
        "roc": _thin(pd.DataFrame({"fpr": fpr, "tpr": tpr})),
        "pr": _thin(pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]})),
        "calibration": pd.DataFrame({"mean_predicted": prob_pred, "fraction_positive": prob_true}),
        "confusion": pd.DataFrame({"actual": labels, "predicted": predicted}),
    }


def confusion_counts(actual: np.ndarray, predicted: np.ndarray, labels: list[str]) -> np.ndarray:
    """Rows per (actual, predicted) pair, in ``labels`` order: sklearn's confusion_matrix,
    without its label discovery over every row."""
    is_actual = [actual == label for label in labels]
    is_predicted = [predicted == label for label in labels]
    return np.array([[np.count_nonzero(a & p) for p in is_predicted] for a in is_actual])


def render_figures(
    data: dict[str, pd.DataFrame], metrics: dict[str, float], out: Path
) -> list[Path]:
    # The Figure API renders with Agg directly; pyplot's backend machinery is not needed
    # (and is the slower import).
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig: Any, name: str) -> None:
        path = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100, metadata={"Software": None})
        written.append(path)

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.plot(data["roc"].fpr, data["roc"].tpr, label=f"ROC AUC {metrics['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (test split)")
    ax.legend(loc="lower right")
    save(fig, "roc")

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.plot(data["pr"].recall, data["pr"].precision, label=f"PR AUC {metrics['pr_auc']:.3f}")
    ax.axhline(metrics["positive_rate"], linestyle="--", color="grey", linewidth=1)
    ax.set(
        xlabel="Recall", ylabel="Precision", title="Precision-recall (test split)", ylim=(0, 1.02)
    )
    ax.legend(loc="upper right")
    save(fig, "pr")

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    cal = data["calibration"]
    ax.plot(cal.mean_predicted, cal.fraction_positive, marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    ax.set(
        xlabel="Mean predicted probability",
        ylabel="Fraction positive",
        title=f"Calibration (Brier {metrics['brier']:.3f})",
    )
    ax.legend(loc="upper left")
    save(fig, "calibration")

    conf = data["confusion"]
    matrix = confusion_counts(conf.actual.to_numpy(), conf.predicted.to_numpy(), CONFUSION_LABELS)
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            color="white" if v > matrix.max() / 2 else "black",
        )
    ax.set_xticks([0, 1], CONFUSION_LABELS)
    ax.set_yticks([0, 1], CONFUSION_LABELS)
    ax.set(
        xlabel="Predicted",
        ylabel="Actual",
        title=f"Confusion at threshold {metrics['threshold']:.2f}",
    )
    save(fig, "confusion")
    return written


def log_to_mlflow(
    params: PipelineParams,
    paths: Layout,
    model: Any,
    example: pd.DataFrame,
    metrics: dict[str, float],
    figures: list[Path],
) -> str | None:
    """The one MLflow run of the model in the workspace, and its ID.

    A model train just fitted (its lineage record has no run yet) gets a new run with train's
    params, metrics, tags and card, the model itself, then the test metrics and figures;
    evaluating that model again (an evaluate param changed) adds to the same run. A model with
    no lineage record here (``dvc pull`` brought it) is found by its MD5 tag, or not logged.
    """
    from plumbline.core.tracking import configure

    record = current_record(paths)
    mlflow = configure(params.mlflow, paths.root)
    run_id = record.mlflow_run_id if record else None
    if record is None:
        client = mlflow.tracking.MlflowClient()
        experiment = mlflow.get_experiment_by_name(params.mlflow.experiment)
        found = find_train_run(client, [experiment.experiment_id], md5_file(paths.model))
        if found is None:
            return None
        run_id = found.info.run_id
    card = ModelMetadata.read(paths.model_metadata) if record and run_id is None else None
    run_name = f"train-{card.estimator}" if card else None
    with mlflow.start_run(run_id=run_id, run_name=run_name) as active:
        if record is not None and card is not None:
            _log_training(mlflow, record, card, model, example)
            record.mlflow_run_id = active.info.run_id
            record.tracking_uri = mlflow.get_tracking_uri()
            record.write(paths.run_record)
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        for fig in figures:
            mlflow.log_artifact(str(fig), artifact_path="figures")
        return str(active.info.run_id)


def _log_training(
    mlflow: Any, record: RunRecord, card: ModelMetadata, model: Any, example: pd.DataFrame
) -> None:
    from mlflow.models import infer_signature

    from plumbline.core.tracking import pip_requirements
    from plumbline.model.boosting import requirements

    mlflow.log_params({k: ("null" if v is None else v) for k, v in record.train_params.items()})
    mlflow.log_metrics(record.train_metrics)
    mlflow.set_tags(
        {
            "plumbline.contract": card.contract,
            COMMIT_TAG: record.git_commit or "unknown",
            MODEL_MD5_TAG: record.model_md5,
            **{f"plumbline.data.{k}": v for k, v in card.data_hashes.items()},
        }
    )
    mlflow.log_dict(asdict(card), "model_card.json")
    with warnings.catch_warnings():
        # MLflow warns that integer columns cannot hold missing values; the contract decides
        # nullability, and serving validates requests against it, not MLflow.
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(example, positive_proba(model, example))
    with skops_compat.explicit_trust():  # MLflow checks the file against the list it is given
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=pip_requirements(requirements(model)),
            signature=signature,
        )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    record.mlflow_model_uri = info.model_uri


def evaluate(inputs: EvaluateInputs, contract: Contract, params: PipelineParams) -> Evaluated:
    """The test metrics (ECE included), the plot data and the audit reports."""
    test = inputs.test
    features = contract.feature_columns(params.featurize.exclude_columns)
    y = contract.encode_target(test[contract.target.column])
    # The test rows go through the transformer once: for the scores here and the permutation
    # importance of the audit.
    transformed, p = transform_and_score(inputs.model, test[features])
    metrics = classification_metrics(y, p, params.evaluate.threshold)
    # How far the probabilities are from calibrated: the monitor's CBPE estimate needs it.
    metrics["ece"] = expected_calibration_error(y, p, params.evaluate.calibration_bins)
    plots = plot_data(y, p, params.evaluate.threshold, params.evaluate.calibration_bins)
    reports = audit(
        params,
        contract,
        inputs.model,
        test,
        y,
        p,
        metrics,
        inputs.card,
        inputs.train_rows,
        inputs.ingest,
        inputs.validation,
        transformed,
    )
    return Evaluated(metrics=metrics, plots=plots, audit=reports)


def _record(path: Path) -> dict[str, Any]:
    """A stage's JSON record; empty when that stage has not run here (the card says so)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def read_inputs(paths: Layout) -> EvaluateInputs:
    """The stage's inputs. The training split, the ingest and validation records only feed
    the model card, which says when one is missing."""
    train_rows = (
        pq.read_table(paths.train_split, columns=[SOURCE_ROW]).column(0).to_pandas()
        if paths.train_split.is_file()
        else pd.Series([], dtype="int64")
    )
    return EvaluateInputs(
        model=load_model(paths.model),
        card=ModelMetadata.read(paths.model_metadata),
        test=pd.read_parquet(paths.test_split),
        train_rows=train_rows,
        ingest=_record(paths.ingest_record),
        validation=_record(paths.validation_report),
    )


def run(
    params: PipelineParams, contract: Contract, paths: Layout, mlflow_logging: bool = True
) -> Evaluated:
    """The stage: evaluate the model; write the metrics, plots, figures and audit reports;
    log the model's MLflow run unless ``mlflow_logging`` is off."""
    need(paths.model, paths.model_metadata, paths.test_split, hint="run `plumbline train` first")
    inputs = read_inputs(paths)
    out = evaluate(inputs, contract, params)
    write_json({k: round(v, 6) for k, v in out.metrics.items()}, paths.metrics)
    paths.plots.mkdir(parents=True, exist_ok=True)
    for name, frame in out.plots.items():
        frame.to_csv(paths.plots / f"{name}.csv", index=False, float_format="%.6f")
    figures = render_figures(out.plots, out.metrics, paths.figures)
    figures += write_reports(out.audit, paths)
    if mlflow_logging:
        features = contract.feature_columns(params.featurize.exclude_columns)
        example = inputs.test[features].head(5)
        try:
            with phase("mlflow"):
                log_to_mlflow(params, paths, inputs.model, example, out.metrics, figures)
        except Exception as err:  # the metrics files are the record; MLflow is a mirror
            log.warning("could not log evaluation to MLflow: %s", err)
    return out
