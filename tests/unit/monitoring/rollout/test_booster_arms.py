"""A rollout with an XGBoost or LightGBM model as champion or challenger, from a worker's router
to the monitor, in process: the router answers and logs with the server's own prediction-log
writer, the monitor ingests the log and the outcomes, and its per-arm live metrics, shadow
divergence and CBPE estimate of a calibrated booster champion are those of each model's own
scores."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from support.paths import REPO
from support.serve import artifacts, estimator_model

from plumbline.core.contract import Contract, load_contract
from plumbline.core.paths import layout
from plumbline.model.artifact import ModelMetadata, load_model
from plumbline.model.metrics import classification_metrics, expected_calibration_error, roc_auc
from plumbline.monitoring import cbpe
from plumbline.monitoring.monitor import Monitor
from plumbline.monitoring.rollout.arms import evaluate
from plumbline.monitoring.settings import load_params
from plumbline.monitoring.store import Outcome
from plumbline.serving.metrics import ArmMetrics, ServeMetrics
from plumbline.serving.predlog_writer import PredictionLog
from plumbline.serving.rollout.router import Rollout, RolloutState
from plumbline.serving.scorer import compile_scorer
from plumbline.serving.settings import RolloutConfig
from plumbline.serving.source import ServedModel

# (champion, challenger, mode): each booster on each side, and two boosters against each
# other. The champion is calibrated (train.calibration: sigmoid), as CBPE asks of a model.
CASES = [
    ("lightgbm", "logistic_regression", "shadow"),
    ("logistic_regression", "xgboost", "shadow"),
    ("xgboost", "lightgbm", "canary"),
]


class _Challenger:
    """The challenger's model manager, loaded."""

    def __init__(self, model: ServedModel) -> None:
        self.active = model
        self.last_error: str | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(REPO / "contracts/bank_marketing.yaml")


@pytest.mark.parametrize(("champion_name", "challenger_name", "mode"), CASES)
def test_a_booster_rollout_reaches_the_monitors_arms_and_estimate(
    tmp_path: Path, contract: Contract, champion_name: str, challenger_name: str, mode: str
) -> None:
    bank = artifacts()
    params = load_params(REPO / "params.yaml")
    threshold = params.serve.threshold
    test = bank.test_frame()
    y = np.asarray(contract.encode_target(test[contract.target.column]))
    rows = [
        tuple(v.item() if hasattr(v, "item") else v for v in row)
        for row in test[bank.features].astype(object).itertuples(index=False, name=None)
    ]
    champion_file = estimator_model(champion_name, "sigmoid")
    challenger_file = estimator_model(challenger_name)
    champion_model, challenger_model = load_model(champion_file), load_model(challenger_file)
    p_champion = champion_model.predict_proba(test[bank.features])[:, 1]
    p_challenger = challenger_model.predict_proba(test[bank.features])[:, 1]

    # The champion's references, where the monitor reads a version the pipeline built.
    paths = layout(tmp_path)
    paths.reference_profile.parent.mkdir(parents=True)
    shutil.copy(bank.root / "reference_profile.json", paths.reference_profile)
    ModelMetadata.read(champion_file.with_suffix(".json")).write(paths.model_metadata)
    metrics = classification_metrics(y, p_champion, threshold)
    metrics["ece"] = expected_calibration_error(y, p_champion, params.evaluate.calibration_bins)
    paths.metrics.parent.mkdir(parents=True)
    paths.metrics.write_text(orjson.dumps(metrics).decode())
    monitor = Monitor(params, contract, tmp_path)

    # The worker's side: the router of a rollout, logging with the server's writer.
    def served(path: Path, version: str) -> ServedModel:
        scorer = compile_scorer(load_model(path), contract, bank.features)
        return ServedModel("plumbline-classifier", version, "registry", scorer, time.time())

    champion, challenger = served(champion_file, "1"), served(challenger_file, "2")
    log = PredictionLog(
        params.serve.prediction_log.model_copy(update={"dir": monitor.log_dir}),
        monitor.log_dir,
        contract,
        bank.features,
        ServeMetrics(False, "worker"),
    )
    log.start()
    cfg = RolloutConfig(mode=mode, canary_fraction=0.5)  # type: ignore[arg-type]
    manager: Any = _Challenger(challenger)
    rollout = Rollout(
        cfg,
        bank.features,
        threshold,
        ArmMetrics(False),
        log,
        lambda *a: None,
        lambda: manager,
        rng=random.Random(0),
    )
    rollout._apply(RolloutState.from_config(cfg))
    now = time.time()
    requests = [(f"r{i}", now + i * 1e-3, [row], True, 0) for i, row in enumerate(rows)]
    answers = []
    for start in range(0, len(requests), 64):  # batches as the serving loop forms them
        answers += rollout.predict(requests[start : start + 64], champion)
        rollout.drain()
    log.close()

    # Every answer is the score of the model of the arm that answered it.
    answered_by = np.array([orjson.loads(body)["model_version"] for _, body in answers])
    probability = np.array([orjson.loads(body)["probability"] for _, body in answers])
    expected = np.where(answered_by == "2", p_challenger, p_champion)
    np.testing.assert_allclose(probability, expected, rtol=0, atol=1e-9)
    if mode == "shadow":
        assert set(answered_by) == {"1"}
    else:
        assert 0.4 < np.mean(answered_by == "2") < 0.6

    monitor.feedback([Outcome(f"r{i}", 0, int(o)) for i, o in enumerate(y)])
    snap = monitor.refresh()
    assert snap.error is None, snap.error

    report = evaluate(monitor.store, params.serve.rollout.decide, threshold)
    assert report is not None
    assert (report.mode, report.champion_version, report.challenger_version) == (mode, "1", "2")
    if mode == "shadow":  # both scores of every row: paired, on all of them
        arms = {"champion": (y, p_champion), "challenger": (y, p_challenger)}
        assert report.divergence is not None
        assert report.divergence["mean_abs"] == pytest.approx(
            float(np.mean(np.abs(p_champion - p_challenger))), abs=1e-9
        )
    else:  # each arm on the rows it answered
        mine = answered_by == "2"
        arms = {
            "champion": (y[~mine], p_champion[~mine]),
            "challenger": (y[mine], p_challenger[mine]),
        }
    for arm, (outcomes, scores) in arms.items():
        assert report.labelled[arm] == len(outcomes)
        assert report.live[arm]["roc_auc"] == pytest.approx(roc_auc(outcomes, scores), abs=1e-9)

    if mode == "shadow":  # the champion answered every row: CBPE on its scores alone
        est = params.monitor.estimate
        assert snap.serving_version == "1" and snap.estimate is not None
        assert snap.estimate.available, snap.estimate.reason
        assert snap.estimate.rows == min(len(rows), params.monitor.window_rows)
        window = p_champion[-params.monitor.window_rows :]
        alone = cbpe.estimate(window, "1", threshold, metrics["ece"], est.max_ece, est.min_rows)
        assert snap.estimate.roc_auc == pytest.approx(alone.roc_auc, abs=1e-9)
        assert snap.estimate.precision == pytest.approx(alone.precision, abs=1e-9)
        assert snap.estimate.recall == pytest.approx(alone.recall, abs=1e-9)
