"""Helpers of the serving tests: real models from the real pipeline code, a real MLflow store,
and the real server (``plumbline serve``) as a subprocess on a free port.

Everything expensive is built once per test session in a temporary directory: the featurize
stage and the train code run on the small committed bank file (4,119 rows), so the tests need
no ``dvc repro`` and never touch the project's ``mlflow.db``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import requests
import yaml

from plumbline.core import yamlfile
from support.cli import forget_mlflow_uris
from support.mlflowstore import new_store
from support.paths import BANK_SMALL, REPO
from support.process import Process

ADMIN_TOKEN = "test-admin-token"
MODEL_NAME = "plumbline-serve-test"


def _session_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="plumbline-serve-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@cache
def session_dir() -> Path:
    return _session_dir()


# --- models from the pipeline's own code ------------------------------------------------------


@dataclass(frozen=True)
class Artifacts:
    root: Path
    test_split: Path
    model: Path  # logistic regression, the default estimator
    other_model: Path  # a differently trained model (class_weight=balanced)
    features: list[str]

    def test_frame(self) -> pd.DataFrame:
        return pd.read_parquet(self.test_split)


@cache
def artifacts() -> Artifacts:
    """ingest -> featurize -> train on the small bank file, with the stages' own functions.

    Rows with a type error are left out instead of validating (GX is the slow part, and no
    other row of the file fails the contract); the featurize stage writes the splits and the
    transformer (``root``: the folder holding train.parquet and transformer.skops)."""
    from plumbline.core.artifacts import write_parquet
    from plumbline.core.contract import load_contract
    from plumbline.core.paths import layout
    from plumbline.model.artifact import save_model
    from plumbline.pipeline import featurize, train
    from plumbline.pipeline.settings import load_pipeline_params
    from support.data import ingested

    paths = layout(session_dir() / "pipeline")
    params = load_pipeline_params(REPO / "params.yaml")
    data = params.data.model_copy(
        update={
            "source": params.data.source.model_copy(update={"path": BANK_SMALL}),
            "resample_rows": None,
        }
    )
    contract = load_contract(REPO / params.data.contract)
    frame = ingested(data, contract, REPO).frame
    frame = frame[frame["_type_errors"].isna()].reset_index(drop=True)
    write_parquet(frame, paths.valid, contract.arrow_schema())
    featurize.run(params, contract, paths)
    train_rows = pd.read_parquet(paths.train_split)

    models = {}
    for name, weight in (("model", None), ("other", "balanced")):
        cfg = params.model_copy(
            update={
                "train": params.train.model_copy(
                    update={
                        "logistic_regression": params.train.logistic_regression.model_copy(
                            update={"class_weight": weight}
                        )
                    }
                )
            }
        )
        # A transformer of its own: the model carries it (and its explanation baseline).
        transformer = featurize.fit_transformer(train_rows, contract, params.featurize)
        models[name] = paths.root / "models" / f"{name}.skops"
        trained = train.train(train_rows, transformer, contract, cfg, data_hashes={})
        save_model(trained.model, models[name])
    return Artifacts(
        root=paths.train_split.parent,
        test_split=paths.test_split,
        model=models["model"],
        other_model=models["other"],
        features=contract.feature_columns(params.featurize.exclude_columns),
    )


@cache
def estimator_model(estimator: str, calibration: str = "none") -> Path:
    """A model of ``estimator`` (``xgboost``, ``lightgbm``, ...) with its hyperparameters as
    written in params.yaml and ``train.calibration``, trained by the train stage's code on
    :func:`artifacts`' split; its card (models/model.json's content) is beside it, ``.json``."""
    from plumbline.core.contract import load_contract
    from plumbline.model.artifact import save_model
    from plumbline.pipeline import featurize, train
    from plumbline.pipeline.settings import load_pipeline_params

    bank = artifacts()
    params = load_pipeline_params(REPO / "params.yaml")
    settings = {"estimator": estimator, "calibration": calibration}
    params = params.model_copy(update={"train": params.train.model_copy(update=settings)})
    contract = load_contract(REPO / params.data.contract)
    train_rows = pd.read_parquet(bank.root / "train.parquet")
    transformer = featurize.fit_transformer(train_rows, contract, params.featurize)
    trained = train.train(train_rows, transformer, contract, params, data_hashes={})
    path = bank.model.parent / f"{estimator}-{calibration}.skops"
    save_model(trained.model, path)
    trained.metadata.write(path.with_suffix(".json"))
    return path


def records(frame: pd.DataFrame, features: list[str]) -> list[dict[str, Any]]:
    """Rows as JSON records (Python ints and floats, as a client would send them)."""
    out = []
    for row in frame[features].astype(object).to_dict(orient="records"):
        out.append({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    return out


# --- a real MLflow store ----------------------------------------------------------------------


@dataclass
class Store:
    uri: str
    versions: dict[str, str]  # label -> registered version

    def set_champion(self, label: str) -> None:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=self.uri, registry_uri=self.uri).set_registered_model_alias(
            MODEL_NAME, "champion", self.versions[label]
        )


def make_store(directory: Path, labels: dict[str, Path]) -> Store:
    """A SQLite MLflow store with one registered version per label; champion = first label.

    A label ending in ``corrupt`` gets a version whose model file is overwritten with garbage
    after registration (the registry still lists it; loading it fails).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    from plumbline.core.tracking import pip_requirements
    from plumbline.model.artifact import TRUSTED_TYPES, load_model
    from plumbline.model.boosting import requirements

    uri = new_store(directory / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment(
        "serve-tests", artifact_location=(directory / "art").as_uri()
    )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions: dict[str, str] = {}
    for label, path in labels.items():
        model = load_model(path)
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format="skops",
                skops_trusted_types=TRUSTED_TYPES,
                pip_requirements=pip_requirements(requirements(model)),
            )
        version = mlflow.register_model(info.model_uri, MODEL_NAME)
        versions[label] = str(version.version)
        if label.endswith("corrupt"):
            location = Path(
                mlflow.get_logged_model(info.model_id).artifact_location.removeprefix("file://")
            )
            for model_file in location.rglob("*.skops"):
                model_file.write_bytes(b"this is not a skops file")
    client.set_registered_model_alias(MODEL_NAME, "champion", versions[next(iter(labels))])
    forget_mlflow_uris()
    return Store(uri=uri, versions=versions)


# --- the server process -----------------------------------------------------------------------


def write_params(directory: Path, tracking_uri: str | None = None, **serve: Any) -> Path:
    """params.yaml of the repo with the ``serve`` section overridden (log under directory)."""
    raw = yamlfile.safe_load((REPO / "params.yaml").read_text())
    raw["mlflow"]["model_name"] = MODEL_NAME
    raw["mlflow"]["tracking_uri"] = tracking_uri
    section = dict(raw.get("serve") or {})
    section["prediction_log"] = dict(
        section.get("prediction_log") or {},
        dir=str(directory / "predictions"),
        flush_s=0.2,
        **serve.pop("prediction_log", {}),
    )
    for key, value in serve.items():
        section[key] = value
    raw["serve"] = section
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class Server(Process):
    """``plumbline serve`` on a free port; stopped (and checked) on exit."""

    name = "server"

    def __init__(
        self, directory: Path, tracking_uri: str, uri_from: str = "env", **serve: Any
    ) -> None:
        """``uri_from``: pass the MLflow store as MLFLOW_TRACKING_URI ("env") or as
        ``mlflow.tracking_uri`` in params.yaml ("params")."""
        super().__init__(directory)
        self.params = write_params(
            directory, tracking_uri if uri_from == "params" else None, **serve
        )
        self.extra_env = dict(
            # The deprecated single token: an operator of the admin routes.
            PLUMBLINE_ADMIN_TOKEN=ADMIN_TOKEN,
            # The server's audit records stay with the test, not in the repository's logs/.
            PLUMBLINE_AUDIT_URL=f"sqlite:///{directory / 'governance.sqlite'}",
            PROMETHEUS_MULTIPROC_DIR=str(directory / "metrics"),
            PYTHONUNBUFFERED="1",
        )
        self.tracking_uri = tracking_uri if uri_from == "env" else None
        self.session = requests.Session()

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "plumbline",
            "--params",
            str(self.params),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ, **self.extra_env)
        env.pop("PLUMBLINE_ROOT", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return env

    def cwd(self) -> Path:
        return REPO

    def post(self, payload: Any, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + "/predict", json=payload, timeout=30, **kwargs)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path, timeout=10)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text output (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
