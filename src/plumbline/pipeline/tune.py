"""Tune: search the estimator's hyperparameters by cross-validation on the training split.

An Optuna study with the TPE sampler, seeded, whose trials run one after another, so that the
study (and so the model train fits) is a pure function of the commit, the data and the params.
Each trial fits ``train.estimator`` as train would
(:func:`plumbline.model.artifact.build_estimator`) with the drawn hyperparameters over
``train.<estimator>``'s, on every fold, and is scored by the
mean of ``tune.metric`` over the folds. The hyperparameters as written are scored on the same
folds first and kept unless a trial beats them, so the search never chooses something worse
on the folds than the file's values.

The folds split the training split only (the test split stays unseen until evaluate):
forward-chaining when the contract says rows are time-ordered (fold k trains on the first k
blocks and validates on block k + 1, never on the future), stratified and shuffled otherwise.
The rows are transformed once with the transformer featurize fitted on the whole training
split: its categories come from the contract, so what the folds share is only the numeric
columns' mean and scale.

:func:`tune` searches in memory; :func:`run`, the stage, writes ``reports/tune/best_params.json``
(what train reads) and ``reports/tune/trials.csv`` (every trial; a DVC plot) and logs the study
to MLflow as one run with the trials table. ``tune.trials: 0`` writes the "as written" choice
and nothing else runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from plumbline.core import skops_compat
from plumbline.core.contract import Contract
from plumbline.core.errors import need
from plumbline.core.paths import Layout
from plumbline.model.artifact import TRUSTED_TYPES, build_estimator, positive_proba
from plumbline.model.settings import TrainConfig
from plumbline.model.stats import HIGHER_IS_BETTER, metric
from plumbline.pipeline.settings import (
    HYPERPARAMETERS,
    Dimension,
    PipelineParams,
    TuneConfig,
    is_integer_setting,
)

log = logging.getLogger(__name__)

FORWARD_CHAINING = "forward-chaining"
STRATIFIED = "stratified"


@dataclass
class Tuned:
    best: dict[str, Any]  # reports/tune/best_params.json
    trials: pd.DataFrame  # reports/tune/trials.csv
    mlflow_run_id: str | None = None


Fold = tuple[np.ndarray, np.ndarray]  # (training row indices, validation row indices)


def forward_chaining_folds(n: int, folds: int) -> list[Fold]:
    """``folds`` splits of ``n`` time-ordered rows: the rows cut into ``folds + 1`` consecutive
    blocks, fold k trains on blocks 0..k and validates on block k + 1 (scikit-learn's
    ``TimeSeriesSplit``)."""
    if n < folds + 1:
        raise ValueError(f"{n} rows cannot make {folds} forward-chaining folds")
    edges = np.linspace(0, n, folds + 2).round().astype(np.intp)
    rows = np.arange(n)
    return [(rows[: edges[k + 1]], rows[edges[k + 1] : edges[k + 2]]) for k in range(folds)]


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[Fold]:
    """Shuffled (with ``seed``) folds that keep the class balance of ``y``."""
    from sklearn.model_selection import StratifiedKFold

    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(train, valid) for train, valid in split.split(np.zeros(len(y)), y)]


def cv_folds(y: np.ndarray, cfg: TuneConfig, time_ordered: bool) -> tuple[str, list[Fold]]:
    if time_ordered:
        return FORWARD_CHAINING, forward_chaining_folds(len(y), cfg.folds)
    return STRATIFIED, stratified_folds(y, cfg.folds, cfg.seed)


def _suggest(trial: Any, estimator: str, name: str, dim: Dimension) -> Any:
    if dim.choices is not None:
        return trial.suggest_categorical(name, dim.choices)
    assert dim.low is not None and dim.high is not None  # validated: a range
    if is_integer_setting(HYPERPARAMETERS[estimator], name):
        step = int(dim.step) if dim.step is not None else 1
        return trial.suggest_int(name, int(dim.low), int(dim.high), step=step, log=dim.log)
    return trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)


def cross_validate(
    x: np.ndarray, y: np.ndarray, train_cfg: TrainConfig, folds: list[Fold], metric_name: str
) -> list[float]:
    """The metric of ``train_cfg``'s estimator on each fold's validation rows."""
    scores = []
    for fit_rows, valid_rows in folds:
        estimator = build_estimator(train_cfg).fit(x[fit_rows], y[fit_rows])
        p = positive_proba(estimator, x[valid_rows])
        scores.append(metric(metric_name, y[valid_rows], p))
    return scores


def as_written(train_cfg: TrainConfig, space: dict[str, Dimension]) -> dict[str, Any]:
    """The searched hyperparameters' values in ``train.<estimator>``."""
    current = getattr(train_cfg, train_cfg.estimator)
    return {name: getattr(current, name) for name in space}


def tune(
    x: np.ndarray, y: np.ndarray, train_cfg: TrainConfig, cfg: TuneConfig, time_ordered: bool
) -> Tuned:
    """The study on transformed training rows ``x`` with targets ``y`` (0/1)."""
    estimator = train_cfg.estimator
    space = cfg.space.get(estimator, {})
    if cfg.trials == 0 or not space:
        untouched: dict[str, Any] = {"estimator": estimator, "tuned": False, "params": {}}
        return Tuned(
            best=untouched, trials=pd.DataFrame(columns=["trial", "state", "value", "best"])
        )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    order, folds = cv_folds(y, cfg, time_ordered)
    higher = HIGHER_IS_BETTER[cfg.metric]
    study = optuna.create_study(
        direction="maximize" if higher else "minimize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=(
            optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
            if cfg.prune
            else optuna.pruners.NopPruner()
        ),
    )
    written = as_written(train_cfg, space)
    # The file's own values are scored on the same folds first: the search keeps them unless a
    # trial does better (they need not lie inside the space, e.g. a log range above 0.0).
    written_value = float(np.mean(cross_validate(x, y, train_cfg, folds, cfg.metric)))

    def objective(trial: Any) -> float:
        values = {name: _suggest(trial, estimator, name, dim) for name, dim in space.items()}
        candidate = train_cfg.with_hyperparameters(values)
        scores: list[float] = []
        for step, fold in enumerate(folds):
            scores += cross_validate(x, y, candidate, [fold], cfg.metric)
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(scores))

    study.optimize(objective, n_trials=cfg.trials, n_jobs=1, gc_after_trial=False)
    trials = trials_table(study, list(space), higher)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    chosen, value, number = written, written_value, None
    if complete:
        top = study.best_trial
        top_value = float(top.values[0])
        if top_value > written_value if higher else top_value < written_value:
            chosen = {name: top.params[name] for name in space}
            value, number = top_value, int(top.number)
    best: dict[str, Any] = {
        "estimator": estimator,
        "tuned": True,
        "params": chosen,
        "metric": cfg.metric,
        "best_value": value,
        "best_trial": number,  # null: no trial beat the values as written
        "as_written": written,
        "as_written_value": written_value,
        "folds": cfg.folds,
        "fold_order": order,
        "trials": cfg.trials,
        "completed": len(complete),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "space": {
            name: dim.model_dump(mode="json", exclude_defaults=True) for name, dim in space.items()
        },
        "seed": cfg.seed,
    }
    return Tuned(best=best, trials=trials)


def trials_table(study: Any, names: list[str], higher: bool) -> pd.DataFrame:
    """One row per trial: its number, state, value (the last reported mean when pruned), the
    best complete value so far, and the hyperparameters it tried."""
    rows = []
    best: float | None = None
    for t in study.trials:
        value = t.value
        if value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        if t.state.name == "COMPLETE" and t.value is not None:
            better = best is None or (t.value > best if higher else t.value < best)
            best = float(t.value) if better else best
        row: dict[str, Any] = {
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": value,
            "best": best,
        }
        row.update({name: t.params.get(name) for name in names})
        rows.append(row)
    return pd.DataFrame(rows)


def write(tuned: Tuned, paths: Layout) -> None:
    paths.tune_best.parent.mkdir(parents=True, exist_ok=True)
    paths.tune_best.write_text(json.dumps(tuned.best, indent=2) + "\n")
    tuned.trials.to_csv(paths.tune_trials, index=False, lineterminator="\n")


def log_to_mlflow(params: PipelineParams, paths: Layout, tuned: Tuned) -> str:
    """The study as one MLflow run: the tune settings and the best hyperparameters as params,
    the best and as-written fold means as metrics, the trials table and the choice as files."""
    from plumbline.core.tracking import configure, git_commit
    from plumbline.model.runrecord import COMMIT_TAG

    mlflow = configure(params.mlflow, paths.root)
    best = tuned.best
    with mlflow.start_run(run_name=f"tune-{best['estimator']}") as active:
        mlflow.set_tags(
            {"plumbline.stage": "tune", COMMIT_TAG: git_commit(paths.root) or "unknown"}
        )
        settings = params.tune.model_dump(mode="json", exclude={"space"})
        mlflow.log_params({f"tune.{k}": v for k, v in settings.items()})
        mlflow.log_params(
            {f"best.{k}": "null" if v is None else v for k, v in best["params"].items()}
        )
        mlflow.log_metric(f"cv_{best['metric']}", best["best_value"])
        if best.get("as_written_value") is not None:
            mlflow.log_metric(f"cv_{best['metric']}_as_written", best["as_written_value"])
        for _, row in tuned.trials.iterrows():
            if row["value"] is not None and not pd.isna(row["value"]):
                mlflow.log_metric("trial_value", float(row["value"]), step=int(row["trial"]))
        mlflow.log_artifact(str(paths.tune_trials), artifact_path="tune")
        mlflow.log_artifact(str(paths.tune_best), artifact_path="tune")
        return str(active.info.run_id)


def run(
    params: PipelineParams, contract: Contract, paths: Layout, mlflow_logging: bool = True
) -> Tuned:
    """The stage: the study on the training split; writes the choice and the trials."""
    # The whole section: the estimator's settings as written, its seed and calibration.
    train_cfg = TrainConfig.model_validate(params.train.model_dump())
    space = params.tune.space.get(train_cfg.estimator, {})
    if params.tune.trials == 0 or not space:
        tuned = tune(np.zeros((0, 0)), np.zeros(0), train_cfg, params.tune, False)
        write(tuned, paths)
        return tuned
    need(paths.train_split, paths.transformer, hint="run `plumbline featurize` first")
    rows = pd.read_parquet(paths.train_split)
    time_ordered = contract.time_column is not None or contract.rows_time_ordered
    if contract.time_column is not None:
        # featurize wrote the split in time order; sorting again (stable) keeps the folds
        # forward-chaining whatever wrote the file.
        rows = rows.sort_values(contract.time_column, kind="stable").reset_index(drop=True)
    transformer = skops_compat.load(paths.transformer, TRUSTED_TYPES)
    features = contract.feature_columns(params.featurize.exclude_columns)
    x = np.asarray(transformer.transform(rows[features]), dtype=np.float64)
    y = contract.encode_target(rows[contract.target.column])
    tuned = tune(x, np.asarray(y), train_cfg, params.tune, time_ordered)
    write(tuned, paths)
    if mlflow_logging:
        tuned.mlflow_run_id = log_to_mlflow(params, paths, tuned)
    return tuned
