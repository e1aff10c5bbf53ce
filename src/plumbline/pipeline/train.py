"""Train: fit the configured estimator on the transformed training split.

Saves one artifact, ``models/model.skops`` (transformer + estimator), and a model card beside
it (both DVC outputs, byte-reproducible), and writes the run's lineage record
(``models/lineage.json``, untracked): the commit, the params and the training metrics. Evaluate
logs all of it, with the model, to one MLflow run, so a pipeline run starts MLflow once.

:func:`train` fits in memory; :func:`run`, the stage, reads the training split and the
transformer, writes the model and its card, and the lineage record (the commit and the time
are this run's facts, not the model's).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from plumbline.core import skops_compat
from plumbline.core.contract import Contract
from plumbline.core.errors import PlumblineError, need
from plumbline.core.paths import Layout
from plumbline.core.tracking import git_commit, md5_file
from plumbline.model.artifact import (
    TRUSTED_TYPES,
    ModelMetadata,
    assemble,
    build_estimator,
    positive_proba,
    save_model,
)
from plumbline.model.explain import attach_baseline
from plumbline.model.features import numeric_profile
from plumbline.model.runrecord import RunRecord, now
from plumbline.model.settings import TrainConfig
from plumbline.pipeline.settings import PipelineParams

log = logging.getLogger(__name__)


@dataclass
class Trained:
    model: Any  # the scikit-learn Pipeline: the transformer, then the estimator
    metadata: ModelMetadata  # models/model.json
    params: dict[str, Any]  # train's and featurize's settings, flattened: the run's params
    metrics: dict[str, float]  # on the training split


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: obj}


def fit(
    rows: pd.DataFrame,
    transformer: Any,
    contract: Contract,
    params: PipelineParams,
    train_cfg: TrainConfig | None = None,
) -> tuple[Any, np.ndarray]:
    """The fitted pipeline, and the positive-class probability of each training row;
    ``train_cfg`` (default ``params.train``): the estimator's settings, as tuned."""
    features = contract.feature_columns(params.featurize.exclude_columns)
    x = transformer.transform(rows[features])
    y = contract.encode_target(rows[contract.target.column])
    estimator = build_estimator(train_cfg or params.train)
    estimator.fit(x, y)
    model = assemble(transformer, estimator)
    attach_baseline(model, x)  # the reference point of per-decision explanations
    # The estimator on the rows just transformed: what the pipeline would compute from the
    # frame, without transforming the training split a second time.
    return model, positive_proba(estimator, x)


def train(
    rows: pd.DataFrame,
    transformer: Any,
    contract: Contract,
    params: PipelineParams,
    data_hashes: dict[str, str],
    train_cfg: TrainConfig | None = None,
    tuning: dict[str, Any] | None = None,
) -> Trained:
    """Fit the configured estimator on the training split's ``rows`` through ``transformer``;
    ``data_hashes`` (of the inputs' files) go into the model card; ``train_cfg`` (default
    ``params.train``): the settings with the tune stage's choice applied, which ``tuning``
    (reports/tune/best_params.json) records in the card."""
    cfg = train_cfg or params.train
    model, p = fit(rows, transformer, contract, params, cfg)
    features = contract.feature_columns(params.featurize.exclude_columns)
    y = contract.encode_target(rows[contract.target.column])
    metrics = {
        "train_roc_auc": float(roc_auc_score(y, p)),
        "train_log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15))),
        "train_rows": float(len(rows)),
    }
    metadata = ModelMetadata(
        contract=contract.name,
        features=features,
        target=contract.target.column,
        positive_label=contract.target.positive,
        estimator=cfg.estimator,
        data_hashes=data_hashes,
        score_profile=numeric_profile(
            p,
            params.featurize.profile_quantiles,
            params.featurize.profile_sample_size,
            np.random.default_rng(cfg.seed),
        ),
        tuning=dict(tuning or {}),
    )
    settings = flatten(
        "",
        {
            "train": cfg.model_dump(mode="json"),
            "featurize": params.featurize.model_dump(mode="json"),
        },
    )
    return Trained(model=model, metadata=metadata, params=settings, metrics=metrics)


def data_hashes(paths: Layout) -> dict[str, str]:
    """The inputs' files, for the model card: the splits and the transformer (MD5, as DVC
    has them), the ingested content and the source (from the ingest record)."""
    hashes = {
        name: md5_file(path)
        for name, path in (
            ("train_md5", paths.train_split),
            ("test_md5", paths.test_split),
            ("transformer_md5", paths.transformer),
        )
        if path.is_file()
    }
    if paths.ingest_record.is_file():
        record = json.loads(paths.ingest_record.read_text())
        hashes["ingest_content_sha256"] = record.get("content_sha256", "")
        if record.get("source_sha256"):
            hashes["source_sha256"] = record["source_sha256"]
    return hashes


def tuned_config(train_cfg: TrainConfig, choice: dict[str, Any]) -> TrainConfig:
    """``train:`` with the tune stage's choice (reports/tune/best_params.json) applied."""
    written = TrainConfig.model_validate(train_cfg.model_dump())  # all of it: train reads it all
    if choice.get("estimator") != written.estimator:
        raise PlumblineError(
            f"the tune stage chose for {choice.get('estimator')!r}, train.estimator is "
            f"{written.estimator!r}: run `plumbline tune` (or `dvc repro`)"
        )
    # A choice searched from other values as written is stale (train.<estimator> was edited
    # after tune ran): applying it would silently undo the edit.
    searched = choice.get("as_written") or {}
    current = getattr(written, written.estimator)
    changed = sorted(k for k, v in searched.items() if getattr(current, k, None) != v)
    if choice.get("tuned") and changed:
        raise PlumblineError(
            f"reports/tune/best_params.json was searched from other values of "
            f"train.{written.estimator} ({', '.join(changed)}): run `plumbline tune` (or "
            "`dvc repro`)"
        )
    return written.with_hyperparameters(choice.get("params") or {})


def run(params: PipelineParams, contract: Contract, paths: Layout) -> tuple[Trained, RunRecord]:
    """The stage: train on the training split with the tune stage's hyperparameters; write the
    model, its card and the lineage record, which is returned with what train made."""
    need(paths.train_split, paths.transformer, hint="run `plumbline featurize` first")
    need(paths.tune_best, hint="run `plumbline tune` first")
    choice = json.loads(paths.tune_best.read_text())
    train_cfg = tuned_config(params.train, choice)
    rows = pd.read_parquet(paths.train_split)
    transformer = skops_compat.load(paths.transformer, TRUSTED_TYPES)
    out = train(rows, transformer, contract, params, data_hashes(paths), train_cfg, choice)
    save_model(out.model, paths.model)
    out.metadata.write(paths.model_metadata)
    record = RunRecord(
        model_md5=md5_file(paths.model),
        git_commit=git_commit(paths.root),
        trained_at=now(),
        train_params=out.params,
        train_metrics=out.metrics,
    )
    record.write(paths.run_record)
    return out, record
