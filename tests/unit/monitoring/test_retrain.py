"""Retraining: the window policy, one retrain at a time across processes, and what a failed or
rejected retrain leaves behind (the champion, a record, the metrics its alert fires on).

Live rows come from the late part of the real bank file, written to the prediction log by the
server's own PredictionLog code; the pipeline stages, gate and promote run for real against a
temporary SQLite MLflow store.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from support.data import ingested
from support.monitoring import labelled_project, live_records
from support.paths import REPO

from plumbline.core import yamlfile
from plumbline.core.contract import Contract
from plumbline.core.paths import layout
from plumbline.core.settings import CsvSource, DataConfig
from plumbline.monitoring.retrain import (
    RetrainError,
    build_window,
    window_contract,
    write_window,
)


def test_window_policy(tmp_path: Path) -> None:
    window_cfg = {
        "live_rows": 300,
        "history_rows": 1000,
        "max_history_per_live": 1.5,
        "min_live_rows": 100,
    }
    project, monitor, ys = labelled_project(
        tmp_path / "p", 400, 350, {"retrain": {"window": window_cfg}}, with_model=False
    )
    params, contract = monitor.params, monitor.contract
    window = build_window(params, contract, layout(project.root), monitor.store)
    # The newest 300 labelled rows (of 350), after min(1000, 1.5 * 300) history rows.
    assert (window.live_rows, window.history_rows) == (300, 450)
    assert window.live_train_rows == math.floor(0.8 * 750) - 450
    live = window.frame.tail(300)
    records, _ = live_records(50, 300)
    assert live["age"].tolist() == [r["age"] for r in records]
    assert live["euribor3m"].tolist() == [r["euribor3m"] for r in records]
    assert live["y"].tolist() == ys[50:350]
    assert live["duration"].isna().all()  # not logged by the server, not a feature
    history = pd.read_parquet(project.root / "data/interim/valid.parquet").tail(450)
    assert window.frame.head(450)["age"].tolist() == history["age"].tolist()

    # The window file reads back through the ingest stage without a single type error.
    raw = yamlfile.safe_load((REPO / "contracts/bank_marketing.yaml").read_text())
    features = contract.feature_columns(["duration"])
    derived = Contract.model_validate(window_contract(raw, features, "y"))
    write_window(window, contract, tmp_path / "window.csv")
    data = DataConfig(
        contract=tmp_path / "c.yaml", source=CsvSource(path=tmp_path / "window.csv", sep=",")
    )
    out = ingested(data, derived, tmp_path)
    assert out.record.rows == 750 and out.record.cells_failing_type == 0
    assert out.frame["y"].tolist() == window.frame["y"].tolist()

    # History so long that the training split would hold no live row: refused.
    greedy = params.model_copy(
        update={
            "retrain": params.retrain.model_copy(
                update={
                    "window": params.retrain.window.model_copy(
                        update={"history_rows": 3000, "max_history_per_live": 10.0}
                    )
                }
            )
        }
    )
    with pytest.raises(RetrainError, match="would hold no live rows"):
        build_window(greedy, contract, layout(project.root), monitor.store)
    strict = params.model_copy(
        update={
            "retrain": params.retrain.model_copy(
                update={
                    "window": params.retrain.window.model_copy(
                        update={"live_rows": 400, "min_live_rows": 351}
                    )
                }
            )
        }
    )
    with pytest.raises(RetrainError, match="350 labelled live rows"):
        build_window(strict, contract, layout(project.root), monitor.store)
