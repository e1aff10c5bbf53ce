"""Train: fit the configured estimator on the transformed training split.

Saves one artifact, ``models/model.skops`` (transformer + estimator), and a model card beside
it (both DVC outputs, byte-reproducible); logs params, metrics, the git commit, the data hashes
and the model to MLflow, and writes the run's lineage record (``models/lineage.json``,
untracked) with the MLflow run, the logged model and the commit.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.metrics import log_loss, roc_auc_score

from plumbline.config import Params
from plumbline.contract import Contract
from plumbline.explain import attach_baseline
from plumbline.features import numeric_profile
from plumbline.model import (
    TRUSTED_TYPES,
    ModelCard,
    assemble,
    build_estimator,
    positive_proba,
    save_model,
)
from plumbline.paths import Layout
from plumbline.runrecord import COMMIT_TAG, MODEL_MD5_TAG, MODEL_URI_TAG, RunRecord, now
from plumbline.timing import phase
from plumbline.tracking import configure, git_commit, md5_file, pip_requirements

log = logging.getLogger(__name__)


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: obj}


def fit(train: pd.DataFrame, transformer: Any, contract: Contract, params: Params) -> Any:
    features = contract.feature_columns(params.featurize.exclude_columns)
    x = transformer.transform(train[features])
    y = contract.encode_target(train[contract.target.column])
    estimator = build_estimator(params.train)
    estimator.fit(x, y)
    model = assemble(transformer, estimator)
    attach_baseline(model, x)  # the reference point of per-decision explanations
    return model


def data_hashes(paths: Layout) -> dict[str, str]:
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


def run(
    params: Params, contract: Contract, paths: Layout, log_to_mlflow: bool = True
) -> tuple[ModelCard, RunRecord]:
    train = pd.read_parquet(paths.train_split)
    transformer = sio.load(paths.transformer, trusted=TRUSTED_TYPES)
    model = fit(train, transformer, contract, params)
    save_model(model, paths.model)

    features = contract.feature_columns(params.featurize.exclude_columns)
    y = contract.encode_target(train[contract.target.column])
    p = positive_proba(model, train[features])
    train_metrics = {
        "train_roc_auc": float(roc_auc_score(y, p)),
        "train_log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15))),
        "train_rows": float(len(train)),
    }
    card = ModelCard(
        contract=contract.name,
        features=features,
        target=contract.target.column,
        positive_label=contract.target.positive,
        estimator=params.train.estimator,
        data_hashes=data_hashes(paths),
        score_profile=numeric_profile(
            p,
            params.featurize.profile_quantiles,
            params.featurize.profile_sample_size,
            np.random.default_rng(params.train.seed),
        ),
    )
    card.write(paths.model_card)
    record = RunRecord(
        model_md5=md5_file(paths.model), git_commit=git_commit(paths.root), trained_at=now()
    )
    if log_to_mlflow:
        with phase("mlflow"):
            mlflow = configure(params.mlflow, paths.root)
            from mlflow.models import infer_signature

            example = train[features].head(5)
            with warnings.catch_warnings():
                # MLflow warns that integer columns cannot hold missing values; the contract
                # decides nullability, and serving validates requests against it, not MLflow.
                warnings.simplefilter("ignore", UserWarning)
                signature = infer_signature(example, positive_proba(model, example))
            with mlflow.start_run(run_name=f"train-{params.train.estimator}") as active:
                logged = flatten(
                    "",
                    {
                        "train": params.train.model_dump(mode="json"),
                        "featurize": params.featurize.model_dump(mode="json"),
                    },
                )
                mlflow.log_params({k: ("null" if v is None else v) for k, v in logged.items()})
                mlflow.log_metrics(train_metrics)
                mlflow.set_tags(
                    {
                        "plumbline.contract": contract.name,
                        COMMIT_TAG: record.git_commit or "unknown",
                        MODEL_MD5_TAG: record.model_md5,
                        **{f"plumbline.data.{k}": v for k, v in card.data_hashes.items()},
                    }
                )
                mlflow.log_dict(asdict(card), "model_card.json")
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    serialization_format="skops",
                    skops_trusted_types=TRUSTED_TYPES,
                    pip_requirements=pip_requirements(),
                    signature=signature,
                )
                mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
                record.mlflow_run_id = active.info.run_id
                record.mlflow_model_uri = info.model_uri
                record.tracking_uri = mlflow.get_tracking_uri()
    record.write(paths.run_record)
    return card, record
