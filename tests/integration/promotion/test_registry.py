"""Promotion through the MLflow registry: `plumbline promote`, `rollback`, `models`, and the
loader that serving calls. Real registry calls on a temporary SQLite store, models trained on
a small slice of the real bank data.
"""

from __future__ import annotations

import operator
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from support.cli import ok, plumbline
from support.promotion import (
    gate_json,
    train_candidate,
)

from plumbline.core import yamlfile
from plumbline.model.artifact import ModelLoadError, load_model, positive_proba
from plumbline.promotion.registry import load_alias_model


def model_name(project: Path) -> str:
    return str(yamlfile.safe_load((project / "params.yaml").read_text())["mlflow"]["model_name"])


def client(store: Path) -> MlflowClient:
    uri = f"sqlite:///{store}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def aliases(store: Path, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client(store).get_registered_model(name).aliases.items()}


def gate_and_promote(*, expect_pass: bool) -> str:
    code, _, err = plumbline("gate")
    assert code == (0 if expect_pass else 1), err
    return ok("promote")


def test_first_passing_candidate_becomes_champion_with_provenance(
    project: Path, store: Path
) -> None:
    metrics = train_candidate(project)
    out = gate_and_promote(expect_pass=True)
    name = model_name(project)

    assert "champion -> 1 (was none)" in out
    assert aliases(store, name) == {"challenger": "1", "champion": "1"}
    tags = client(store).get_model_version(name, "1").tags
    lock = yamlfile.safe_load((project / "dvc.lock").read_text())
    raw_md5 = next(d["md5"] for d in lock["stages"]["ingest"]["deps"] if d["path"] == "data/raw")
    assert tags["dvc.data/raw"] == raw_md5
    assert tags["gate.verdict"] == "passed"
    assert tags["param.train.estimator"] == "logistic_regression"
    assert tags["param.train.logistic_regression.C"] == "1.0"
    assert float(tags["metric.roc_auc"]) == pytest.approx(metrics["roc_auc"], abs=1e-6)
    assert "plumbline.git_commit" in tags and "plumbline.model_md5" in tags

    # The same model promoted again is found, not registered twice.
    out = gate_and_promote(expect_pass=True)
    assert "found" in out and "already is champion" in out
    assert len(client(store).search_model_versions(f"name = '{name}'")) == 1


def test_failed_gate_registers_challenger_and_leaves_champion(project: Path, store: Path) -> None:
    train_candidate(project)
    gate_and_promote(expect_pass=True)
    # A model that sees only two features: it clears the loose absolute thresholds but is far
    # worse than the champion re-scored on the same test rows.
    train_candidate(
        project,
        **{
            "featurize.exclude_columns": [
                c
                for c in (
                    "duration",
                    "job",
                    "education",
                    "default",
                    "housing",
                    "loan",
                    "contact",
                    "month",
                    "day_of_week",
                    "campaign",
                    "pdays",
                    "previous",
                    "poutcome",
                    "emp.var.rate",
                    "cons.price.idx",
                    "cons.conf.idx",
                    "euribor3m",
                    "nr.employed",
                )
            ]
        },
    )
    out = gate_and_promote(expect_pass=False)
    name = model_name(project)

    assert "gate failed, champion stays version 1" in out
    assert aliases(store, name) == {"champion": "1", "challenger": "2"}
    tags = client(store).get_model_version(name, "2").tags
    assert tags["gate.verdict"] == "failed"
    assert "worse than champion version 1" in tags["gate.reasons"]
    listing = ok("models")
    assert re.search(r"^2\s+challenger\s.*\sfailed\s", listing, re.MULTILINE)
    assert re.search(r"^1\s+champion\s.*\spassed\s", listing, re.MULTILINE)


def test_challenger_only_leaves_the_champion_for_a_rollout(project: Path, store: Path) -> None:
    train_candidate(project)
    gate_and_promote(expect_pass=True)
    train_candidate(project, **{"train.logistic_regression.C": 0.5})
    code, _, err = plumbline("gate")
    assert code == 0, err  # it would have become champion without the flag
    out = ok("promote", "--challenger-only")
    name = model_name(project)

    assert "champion stays version 1 (challenger only; gate passed)" in out
    assert aliases(store, name) == {"champion": "1", "challenger": "2"}
    listing = ok("models")
    assert "challenger  1 -> 2  by" in listing and "champion stays 1" in listing
    # Not a move of champion: there is still no earlier champion to roll back to.
    code, _, err = plumbline("rollback")
    assert code == 1 and "no earlier champion" in err


def test_rollback_goes_back_one_champion_per_call(project: Path, store: Path) -> None:
    for c in (1.0, 0.5, 2.0):
        train_candidate(project, **{"train.logistic_regression.C": c})
        gate_and_promote(expect_pass=True)
    name = model_name(project)
    assert aliases(store, name)["champion"] == "3"

    assert "from version 3 to version 2" in ok("rollback", "--reason", "latency regression")
    assert aliases(store, name) == {"champion": "2", "challenger": "3"}
    assert "from version 2 to version 1" in ok("rollback")
    assert aliases(store, name)["champion"] == "1"

    code, _, err = plumbline("rollback")
    assert code == 1
    assert "no earlier champion" in err
    assert aliases(store, name)["champion"] == "1"

    listing = ok("models")
    assert re.search(r"^1\s+champion\s", listing, re.MULTILINE)
    assert re.search(r"^3\s+challenger\s", listing, re.MULTILINE)
    assert "rollback  3 -> 2  by" in listing and "latency regression" in listing
    assert "rollback  2 -> 1" in listing


def test_champion_alias_loads_the_artifact_under_models(project: Path) -> None:
    train_candidate(project)
    gate_and_promote(expect_pass=True)

    version, served = load_alias_model(model_name(project))

    assert version == "1"
    local = load_model(project / "models/model.skops")
    test = pd.read_parquet(project / "data/features/test.parquet")
    features = list(local.feature_names_in_)
    np.testing.assert_array_equal(
        positive_proba(served, test[features]), positive_proba(local, test[features])
    )


def test_promote_refuses_a_gate_verdict_for_another_model(project: Path) -> None:
    train_candidate(project)
    ok("gate")
    train_candidate(project, **{"train.logistic_regression.C": 0.1})

    code, _, err = plumbline("promote")

    assert code == 1
    assert "run `plumbline gate` again" in err
    assert gate_json(project)["passed"] is True


def test_loader_refuses_types_outside_the_project_allow_list(project: Path, store: Path) -> None:
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    x = np.linspace(0, 1, 40).reshape(-1, 2)
    y = np.arange(20) % 2
    # operator.neg is harmless, but it is not on our list; the model's own MLmodel trusts it.
    crafted = Pipeline(
        [
            ("f", FunctionTransformer(np.abs, inverse_func=operator.neg, check_inverse=False)),
            ("c", LogisticRegression()),
        ]
    ).fit(x, y)
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    mlflow.set_registry_uri(f"sqlite:///{store}")  # an earlier load may have pointed it elsewhere
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            crafted,
            name="model",
            serialization_format="skops",
            skops_trusted_types=["_operator.neg"],
            pip_requirements=["scikit-learn"],
        )
    name = model_name(project)
    version = mlflow.register_model(info.model_uri, name)
    client(store).set_registered_model_alias(name, "champion", version.version)

    with pytest.raises(ModelLoadError, match="not trusted"):
        load_alias_model(name)
