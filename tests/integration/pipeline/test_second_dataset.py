"""A different dataset (other columns, other target, true/false labels) runs through every
stage of the CLI by changing config alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from support.cli import in_project, plumbline

from plumbline.model.artifact import load_model, positive_proba

CONTRACT = """\
name: churn_demo
target: {column: churned, positive: true}
rows_time_ordered: true
columns:
  customer_id: {type: string}
  income: {type: float, nullable: true, min: 0}
  tenure_months: {type: integer, min: 0, max: 240}
  plan: {type: category, categories: [basic, plus, pro]}
  region: {type: category, categories: [north, south, east, west]}
  churned: {type: category, categories: ["false", "true"]}
"""


def customers(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Churn falls with tenure and income and depends on the plan; region is noise."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.5, 0.4, n).round(2)
    tenure = rng.integers(1, 72, n)
    plan = rng.choice(["basic", "plus", "pro"], n)
    logit = (
        1.0
        - 0.05 * tenure
        - 0.8 * (np.log(income) - 10.5) / 0.4
        + pd.Series(plan).map({"basic": 1.0, "plus": 0.0, "pro": -1.0}).to_numpy()
    )
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "region": rng.choice(["north", "south", "east", "west"], n),
            "plan": plan,
            "tenure_months": tenure,
            "income": income.astype(object),
            "churned": np.where(churned, "true", "false"),
        }
    )
    frame.loc[rng.choice(n, 12, replace=False), "income"] = None  # nullable: imputed
    return frame


def test_second_dataset_runs_end_to_end_by_config_alone(tmp_path: Path) -> None:
    customers().to_csv(tmp_path / "customers.csv", index=False)
    (tmp_path / "churn.yaml").write_text(CONTRACT)
    params = {
        "data": {"contract": "churn.yaml", "source": {"kind": "csv", "path": "customers.csv"}},
        "validate": {"max_bad_fraction": 0.0},
        "featurize": {"train_fraction": 0.75, "test_fraction": 0.25, "exclude_columns": []},
        "train": {"estimator": "logistic_regression", "seed": 0},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    # Each stage's command as DVC runs it, in this process (the stages as processes of their
    # own, under DVC, are test_dvc_pipeline.py's).
    with in_project(tmp_path):
        for stage in (
            ["ingest"],
            ["validate"],
            ["featurize"],
            ["tune", "--no-mlflow"],
            ["train"],
            ["evaluate", "--no-mlflow"],
        ):
            code, _, err = plumbline("--params", str(tmp_path / "params.yaml"), *stage)
            assert code == 0, f"{stage}: {err}"

    reports = tmp_path / "reports"
    assert json.loads((reports / "ingest.json").read_text())["rows"] == 600
    validation = json.loads((reports / "validation.json").read_text())
    assert (validation["rows_in"], validation["rows_valid"]) == (600, 600)
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.6
    assert metrics["rows"] == 150
    card = json.loads((tmp_path / "models/model.json").read_text())
    assert card["contract"] == "churn_demo"
    assert card["target"] == "churned"
    assert card["features"] == ["income", "tenure_months", "plan", "region"]
    assert (reports / "plots/roc.csv").is_file() and (reports / "figures/roc.png").is_file()
    # No `slices:` in this contract: no slice table, and everything else still written.
    assert json.loads((reports / "fairness.json").read_text()) == {"threshold": 0.5, "slices": {}}
    assert (reports / "figures/fairness.png").is_file()
    importance = pd.read_csv(reports / "plots/importance.csv")
    assert sorted(importance["feature"]) == sorted(card["features"])
    model_card = (reports / "model_card.md").read_text()
    assert "No `slices:` in the contract" in model_card and "churn_demo" in model_card

    # The one artifact scores raw rows of the new schema, missing income included.
    model = load_model(tmp_path / "models/model.skops")
    test = pd.read_parquet(tmp_path / "data/features/test.parquet")
    p = positive_proba(model, test[card["features"]])
    assert p.shape == (150,) and np.all((p > 0) & (p < 1))
    assert not (tmp_path / "mlflow.db").exists()  # --no-mlflow means no MLflow store

    # Per-row explanations of the new schema's records, missing income included.
    records = tmp_path / "records.csv"
    customers(40, seed=1).to_csv(records, index=False)
    out = tmp_path / "explained.parquet"
    with in_project(tmp_path):
        code, _, err = plumbline(
            "--params", str(tmp_path / "params.yaml"), "explain", str(records), "--output", str(out)
        )
    assert code == 0, err
    explained = pd.read_parquet(out)
    contributions = explained[[f"contribution.{f}" for f in card["features"]]].sum(axis=1)
    np.testing.assert_allclose(explained["base"] + contributions, explained["log_odds"], atol=1e-9)
    raw = pd.read_csv(records)
    expected = positive_proba(model, raw[card["features"]])
    np.testing.assert_allclose(explained["probability"], expected, rtol=0, atol=1e-9)
