"""XGBoost and LightGBM models: deterministic training, skops storage with the library's own
model bytes (no pickle), the library's TreeSHAP against brute-force Shapley values, and
explanations that add up to the served log-odds within 1e-6 on real records, through the fast
scoring path and the server's load-time check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support.serve import artifacts
from support.shapley import brute_force_shapley

from plumbline.core import skops_compat
from plumbline.core.contract import Contract
from plumbline.model.artifact import (
    TRUSTED_TYPES,
    ModelLoadError,
    assemble,
    build_estimator,
    load_model,
    save_model,
)
from plumbline.model.boosting import BoostedTreesClassifier, requirements
from plumbline.model.explain import Explainer
from plumbline.model.features import build_transformer
from plumbline.model.settings import FeaturizeConfig, TrainConfig
from plumbline.serving.explaining import build, explain_batch
from plumbline.serving.scorer import compile_scorer, smoke_rows
from plumbline.serving.source import ServedModel

LIBRARIES = ["xgboost", "lightgbm"]
RECORDS = 200


def _tiny(library: str) -> tuple[BoostedTreesClassifier, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=600) > 0).astype(int)
    params = (
        {"max_depth": 3, "eta": 0.3}
        if library == "xgboost"
        else {"num_leaves": 6, "learning_rate": 0.3, "min_data_in_leaf": 5}
    )
    model = BoostedTreesClassifier(library=library, params=params, n_estimators=5, seed=0)  # type: ignore[arg-type]
    return model.fit(x, y), x


def _trees(model: BoostedTreesClassifier) -> list[dict[str, Any]]:
    """Every tree as nested nodes: feature, threshold, inclusive (<=), children, cover."""

    def xgb(node: dict[str, Any]) -> dict[str, Any]:
        if "leaf" in node:
            return {"value": float(node["leaf"]), "cover": float(node["cover"])}
        children = {c["nodeid"]: c for c in node["children"]}
        return {
            "feature": int(node["split"].lstrip("f")),
            "threshold": float(node["split_condition"]),
            "inclusive": False,  # x < threshold goes left
            "left": xgb(children[node["yes"]]),
            "right": xgb(children[node["no"]]),
            "cover": float(node["cover"]),
        }

    def lgb(node: dict[str, Any]) -> dict[str, Any]:
        if "leaf_value" in node:
            return {"value": float(node["leaf_value"]), "cover": float(node["leaf_count"])}
        assert node["decision_type"] == "<="
        return {
            "feature": int(node["split_feature"]),
            "threshold": float(node["threshold"]),
            "inclusive": True,
            "left": lgb(node["left_child"]),
            "right": lgb(node["right_child"]),
            "cover": float(node["internal_count"]),
        }

    booster = model.booster()
    if model.library == "xgboost":
        dumps = booster.get_dump(dump_format="json", with_stats=True)
        return [xgb(json.loads(d)) for d in dumps]
    return [lgb(t["tree_structure"]) for t in booster.dump_model()["tree_info"]]


def _expected(node: dict[str, Any], row: np.ndarray, known: set[int]) -> float:
    """The path-dependent conditional expectation of one tree given the features ``known``."""
    if "feature" not in node:
        return float(node["value"])
    f = node["feature"]
    if f in known:
        v = row[f]
        go_left = v <= node["threshold"] if node["inclusive"] else v < node["threshold"]
        return _expected(node["left"] if go_left else node["right"], row, known)
    left, right = node["left"], node["right"]
    return (
        left["cover"] * _expected(left, row, known) + right["cover"] * _expected(right, row, known)
    ) / (left["cover"] + right["cover"])


@pytest.mark.parametrize("library", LIBRARIES)
def test_library_tree_shap_equals_brute_force_shapley_values(library: str) -> None:
    model, x = _tiny(library)
    rows = x[:20]
    base, phi = model.shap_values(rows)
    trees = _trees(model)
    p = x.shape[1]
    # XGBoost computes in float32; LightGBM in float64.
    tolerance = 1e-5 if library == "xgboost" else 1e-9
    for r in range(len(rows)):
        brute = sum(
            brute_force_shapley(p, lambda known, t=tree, row=rows[r]: _expected(t, row, known))
            for tree in trees
        )
        np.testing.assert_allclose(phi[r], brute, rtol=0, atol=tolerance)
    # Efficiency: the expected value plus the contributions is the model's log-odds.
    np.testing.assert_allclose(
        base + phi.sum(axis=1), model.decision_function(rows), rtol=0, atol=1e-12
    )
    root_expectation = sum(_expected(tree, rows[0], set()) for tree in trees)
    margin_offset = model.decision_function(rows[:1])[0] - sum(
        _expected(tree, rows[0], set(range(p))) for tree in trees
    )
    assert abs(base - (margin_offset + root_expectation)) < tolerance


@pytest.fixture(scope="module")
def bank(contract: Contract) -> tuple[pd.DataFrame, pd.DataFrame, list[str], Any, np.ndarray]:
    a = artifacts()
    train = pd.read_parquet(a.root / "train.parquet")
    test = a.test_frame().iloc[:RECORDS].reset_index(drop=True)
    transformer = build_transformer(contract, a.features, FeaturizeConfig())
    x = transformer.fit_transform(train[a.features])
    return train, test, a.features, transformer, x


def _pipeline(contract: Contract, bank: Any, library: str, **settings: Any) -> Any:
    train, _, _, transformer, x = bank
    cfg = TrainConfig(estimator=library, **settings)  # type: ignore[arg-type]
    estimator = build_estimator(cfg).fit(x, contract.encode_target(train[contract.target.column]))
    return assemble(transformer, estimator)


@pytest.mark.parametrize("library", LIBRARIES)
def test_training_is_deterministic_and_the_file_holds_the_library_format(
    contract: Contract, bank: Any, library: str, tmp_path: Path
) -> None:
    first, second = (_pipeline(contract, bank, library) for _ in range(2))
    save_model(first, tmp_path / "a.skops")
    save_model(second, tmp_path / "b.skops")
    assert (tmp_path / "a.skops").read_bytes() == (tmp_path / "b.skops").read_bytes()
    stored = first[-1].model_
    if library == "xgboost":
        assert json.loads(stored)["learner"]["gradient_booster"]["name"] == "gbtree"
    else:
        assert stored.startswith(b"tree\nversion=")
    # The only type the boosters add to the trusted list is the wrapper itself.
    extra = set(skops_compat.untrusted_types(tmp_path / "a.skops")) - {
        t for t in TRUSTED_TYPES if t != "plumbline.model.boosting.BoostedTreesClassifier"
    }
    assert extra == {"plumbline.model.boosting.BoostedTreesClassifier"}
    loaded = load_model(tmp_path / "a.skops")
    # The MLflow model's environment names the library, pinned.
    (pinned,) = requirements(loaded)
    assert pinned.startswith("xgboost" if library == "xgboost" else "lightgbm==")
    assert requirements(load_model(artifacts().model)) == []
    _, test, features, _, _ = bank
    np.testing.assert_array_equal(
        loaded.predict_proba(test[features]), first.predict_proba(test[features])
    )


def test_a_file_with_a_library_wrapper_type_is_refused(tmp_path: Path) -> None:
    """The library's own sklearn wrapper would need its internals trusted: refused at load."""
    import xgboost

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
    wrapper = xgboost.XGBClassifier(n_estimators=2, n_jobs=1).fit(x, y)
    skops_compat.dump(wrapper, tmp_path / "wrapper.skops")
    with pytest.raises(ModelLoadError, match="not trusted"):
        load_model(tmp_path / "wrapper.skops")


@pytest.mark.parametrize("library", LIBRARIES)
def test_explanations_add_up_to_the_log_odds_on_real_records(
    contract: Contract, bank: Any, library: str, tmp_path: Path
) -> None:
    save_model(_pipeline(contract, bank, library), tmp_path / "m.skops")
    model = load_model(tmp_path / "m.skops")  # as the server has it
    _, test, features, _, _ = bank
    attribution = Explainer(model, features).explain_frame(test)
    expected = model.decision_function(test[features])
    np.testing.assert_allclose(attribution.log_odds, expected, rtol=0, atol=1e-12)
    total = attribution.base + attribution.contributions.sum(axis=1)
    np.testing.assert_allclose(total, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("library", LIBRARIES)
def test_served_fast_path_and_explain_k_add_up(
    contract: Contract, bank: Any, library: str, tmp_path: Path
) -> None:
    """What a server does at load (fast scorer, smoke-checked explainer) and per request."""
    save_model(_pipeline(contract, bank, library), tmp_path / "m.skops")
    pipeline = load_model(tmp_path / "m.skops")
    _, test, features, _, _ = bank
    scorer = compile_scorer(pipeline, contract, features)
    assert scorer.kind == "fast"
    served = build(pipeline, features, scorer, smoke_rows(contract, features))
    assert served.explainer is not None, served.reason
    model = ServedModel("m", "1", "local", scorer, 0.0, served)
    rows = list(test[features].astype(object).itertuples(index=False, name=None))[:40]
    np.testing.assert_allclose(
        scorer.proba(rows), pipeline.predict_proba(test[features].iloc[:40])[:, 1], atol=1e-12
    )
    requests = [(None, None, rows[:25], None, 3), (None, None, rows[25:], None, 0)]
    explained = explain_batch(model, requests)
    assert explained[1] is None and explained[0] is not None
    log_odds = pipeline.decision_function(test[features].iloc[:25])
    for answer, expected in zip(explained[0], log_odds, strict=True):
        parts = [c["contribution"] for c in answer["contributions"]]
        assert len(parts) == 3
        assert abs(answer["base"] + sum(parts) + answer["other"] - expected) <= 1e-6


@pytest.mark.parametrize("library", LIBRARIES)
def test_calibrated_and_balanced_boosters_store_and_load(
    contract: Contract, bank: Any, library: str, tmp_path: Path
) -> None:
    plain = _pipeline(contract, bank, library)
    settings = {library: {"class_weight": "balanced", "n_estimators": 20}}
    balanced = _pipeline(contract, bank, library, **settings)
    _, test, features, _, _ = bank
    # Weighing the rare class up raises its scores.
    assert balanced.predict_proba(test[features])[:, 1].mean() > (
        plain.predict_proba(test[features])[:, 1].mean()
    )
    calibrated = _pipeline(
        contract, bank, library, calibration="sigmoid", **{library: {"n_estimators": 10}}
    )
    save_model(calibrated, tmp_path / "c.skops")
    loaded = load_model(tmp_path / "c.skops")
    np.testing.assert_array_equal(
        loaded.predict_proba(test[features]), calibrated.predict_proba(test[features])
    )


def test_a_process_without_the_library_refuses_the_model_at_load(
    contract: Contract, bank: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    save_model(_pipeline(contract, bank, "lightgbm", lightgbm={"n_estimators": 5}), tmp_path / "m")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lightgbm" else real(name, *a)
    )
    with pytest.raises(ModelLoadError, match=r"plumbline\[boosting\]"):
        load_model(tmp_path / "m")
