"""Per-decision explanations: additive to the model's log-odds (within 1e-6) for logistic
regression and gradient boosting on 200 real test records, exact Shapley values for the trees,
and contributions that behave: the top one changes sign when its feature crosses the baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from support.serve import artifacts
from support.shapley import brute_force_shapley

from plumbline.core.contract import Contract
from plumbline.model.artifact import assemble, build_estimator, load_model
from plumbline.model.explain import (
    BASELINE_ATTR,
    Explainer,
    ExplainUnsupported,
    TreeShap,
    attach_baseline,
    column_groups,
    explanation_json,
)
from plumbline.model.features import build_transformer
from plumbline.model.settings import FeaturizeConfig, TrainConfig

RECORDS = 200


def _rows(frame: pd.DataFrame, features: list[str]) -> list[tuple[Any, ...]]:
    return list(frame[features].astype(object).itertuples(index=False, name=None))


@pytest.fixture(scope="module")
def bank() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    a = artifacts()
    test = a.test_frame().iloc[:RECORDS].reset_index(drop=True)
    return pd.read_parquet(a.root / "train.parquet"), test, a.features


@pytest.fixture(scope="module")
def boosted(contract: Contract, bank: Any) -> Pipeline:
    train, _, features = bank
    transformer = build_transformer(contract, features, FeaturizeConfig())
    x = transformer.fit_transform(train[features])
    estimator = build_estimator(TrainConfig(estimator="hist_gradient_boosting"))
    estimator.fit(x, contract.encode_target(train[contract.target.column]))
    return assemble(transformer, estimator)


def _check_additive(model: Pipeline, test: pd.DataFrame, features: list[str]) -> None:
    explainer = Explainer(model, features)
    attribution = explainer.explain_frame(test)
    expected = model.decision_function(test[features])
    assert len(expected) == RECORDS
    np.testing.assert_allclose(attribution.log_odds, expected, rtol=0, atol=1e-9)
    total = attribution.base + attribution.contributions.sum(axis=1)
    np.testing.assert_allclose(total, expected, rtol=0, atol=1e-6)
    for k in (1, 3, len(features)):
        for row, explained in zip(
            expected, explanation_json(attribution, _rows(test, features), features, k), strict=True
        ):
            parts = [c["contribution"] for c in explained["contributions"]]
            assert len(parts) == k
            assert explained["space"] == "log_odds"
            assert abs(explained["base"] + sum(parts) + explained["other"] - row) <= 1e-6
            # largest |contribution| first
            assert [abs(p) for p in parts] == sorted((abs(p) for p in parts), reverse=True)


def test_logistic_regression_contributions_add_up_to_the_log_odds(bank: Any) -> None:
    _, test, features = bank
    _check_additive(load_model(artifacts().model), test, features)


def test_gradient_boosting_contributions_add_up_to_the_log_odds(boosted: Pipeline, bank) -> None:
    _, test, features = bank
    assert Explainer(boosted, features).kind == "tree_shap"
    _check_additive(boosted, test, features)


def test_explanation_values_are_the_raw_record_values(bank: Any) -> None:
    _, test, features = bank
    explainer = Explainer(load_model(artifacts().model), features)
    rows = _rows(test.iloc[:5], features)
    explained = explanation_json(explainer.explain_frame(test.iloc[:5]), rows, features, 4)
    for row, e in zip(rows, explained, strict=True):
        for c in e["contributions"]:
            assert c["value"] == row[features.index(c["feature"])]


def test_lr_baseline_is_the_training_mean(bank: Any) -> None:
    train, test, features = bank
    model = load_model(artifacts().model)
    transformer = model.steps[0][1]
    mean = transformer.transform(train[features]).mean(axis=0)
    np.testing.assert_allclose(getattr(model.steps[-1][1], BASELINE_ATTR), mean, atol=1e-12)
    # A numeric feature at its training mean contributes nothing.
    explainer = Explainer(model, features)
    frame = test.iloc[:10].copy()
    frame["euribor3m"] = float(train["euribor3m"].mean())
    at_mean = explainer.explain_frame(frame).contributions[:, features.index("euribor3m")]
    np.testing.assert_allclose(at_mean, 0.0, atol=1e-9)


def test_lr_top_contribution_flips_sign_across_the_baseline(bank: Any, contract) -> None:
    _, test, features = bank
    model = load_model(artifacts().model)
    explainer = Explainer(model, features)
    attribution = explainer.explain_frame(test)
    means = explainer.baseline_values()
    flipped = 0
    for i in range(RECORDS):
        j = int(np.argmax(np.abs(attribution.contributions[i])))
        name = features[j]
        before = attribution.contributions[i, j]
        moved = test.iloc[[i]].copy()
        spec = contract.columns[name]
        if spec.is_numeric:
            # mirrored across the training mean (float: integer columns may not round-trip)
            moved[name] = moved[name].astype(float)
            moved[name] = 2 * means[name] - float(test[name].iloc[i])
            candidates = [moved]
        else:
            candidates = []
            for cat in spec.categories or []:
                other = moved.copy()
                other[name] = cat
                candidates.append(other)
        after = [explainer.explain_frame(c).contributions[0, j] for c in candidates]
        # across the baseline: the value (or the category) whose contribution is farthest
        # on the other side
        opposite = min(after, key=lambda a: a * np.sign(before))
        assert np.sign(opposite) == -np.sign(before), (i, name, before, after)
        flipped += 1
    assert flipped == RECORDS


def test_tree_shap_equals_brute_force_shapley_values() -> None:
    """Path-dependent Shapley values by enumerating every coalition, on a small model."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=600) > 0).astype(int)
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values follow missing_go_to_left
    model = HistGradientBoostingClassifier(max_iter=6, max_leaf_nodes=7, random_state=0)
    model.fit(x, y)
    base, phi = TreeShap(model).shap_values(x[:25])

    def expected(nodes: Any, i: int, row: np.ndarray, known: set[int]) -> float:
        node = nodes[i]
        if node["is_leaf"]:
            return float(node["value"])
        left, right = int(node["left"]), int(node["right"])
        f = int(node["feature_idx"])
        if f in known:
            v = row[f]
            go_left = node["missing_go_to_left"] if np.isnan(v) else v <= node["num_threshold"]
            return expected(nodes, left if go_left else right, row, known)
        return (
            nodes[left]["count"] * expected(nodes, left, row, known)
            + nodes[right]["count"] * expected(nodes, right, row, known)
        ) / node["count"]

    p = x.shape[1]
    for r in range(25):
        brute = sum(
            brute_force_shapley(
                p, lambda known, n=tree[0].nodes, row=x[r]: expected(n, 0, row, known)
            )
            for tree in model._predictors
        )
        np.testing.assert_allclose(phi[r], brute, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        base + phi.sum(axis=1), model.decision_function(x[:25]), rtol=0, atol=1e-9
    )


def test_tree_top_contribution_flips_sign_across_the_baseline() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(3000, 3)), columns=["a", "b", "c"])
    y = (2.0 * frame["a"] + 0.3 * frame["b"] + rng.normal(size=3000) > 0).astype(int)
    transformer = ColumnTransformer([("numeric", StandardScaler(), ["a", "b", "c"])])
    pipeline = Pipeline(
        [
            ("features", transformer),
            ("classifier", HistGradientBoostingClassifier(max_iter=50, random_state=0)),
        ]
    )
    pipeline.fit(frame, y)
    explainer = Explainer(pipeline, ["a", "b", "c"])
    test = frame.iloc[:200].copy()
    test = test[test["a"].abs() > 0.5]  # clearly on one side of the baseline
    contributions = explainer.explain_frame(test).contributions
    assert (np.argmax(np.abs(contributions), axis=1) == 0).all()
    mirrored = test.assign(a=2 * frame["a"].mean() - test["a"])
    after = explainer.explain_frame(mirrored).contributions[:, 0]
    assert (np.sign(after) == -np.sign(contributions[:, 0])).all()


def test_an_lr_model_without_baseline_is_not_explained(contract: Contract, bank: Any) -> None:
    train, _, features = bank
    transformer = build_transformer(contract, features, FeaturizeConfig())
    x = transformer.fit_transform(train[features])
    estimator = build_estimator(TrainConfig()).fit(
        x, contract.encode_target(train[contract.target.column])
    )
    model = assemble(transformer, estimator)
    with pytest.raises(ExplainUnsupported, match="baseline"):
        Explainer(model, features)
    attach_baseline(model, x)
    assert Explainer(model, features).kind == "linear"


def test_columns_are_grouped_by_raw_feature(contract: Contract, bank: Any) -> None:
    _, _, features = bank
    model = load_model(artifacts().model)
    owner = column_groups(model.steps[0][1], features)
    names = model.steps[0][1].get_feature_names_out()
    assert len(owner) == len(names)
    for column, j in zip(names, owner, strict=True):
        block, rest = column.split("__", 1)
        if block == "numeric":
            assert rest == features[j]
        else:
            assert rest.startswith(features[j] + "_")
    # every feature owns at least one column, one-hot features one per category
    counts = np.bincount(owner, minlength=len(features))
    for name, n in zip(features, counts, strict=True):
        spec = contract.columns[name]
        assert n == (len(spec.categories or []) if spec.type == "category" else 1)


def test_global_importance_is_the_permutation_importance_of_the_pipeline(
    boosted: Pipeline, bank: Any
) -> None:
    """Shuffling a feature's block of transformed columns is shuffling the raw feature: each
    row of the table is the drop in ROC AUC of the whole pipeline on the frame with that one
    column shuffled, the same permutations drawn in the same order."""
    from sklearn.metrics import roc_auc_score

    from plumbline.model.importance import PERMUTATION_REPEATS, global_importance

    _, test, features = bank
    y = (test["y"] == "yes").to_numpy(dtype=np.int64)
    raw = test[features]
    for model in (load_model(artifacts().model), boosted):
        table = global_importance(model, test, y, features, seed=7).set_index("feature")
        rng = np.random.default_rng(7)
        reference = roc_auc_score(y, model.decision_function(raw))
        for feature in features:
            drops = []
            for _ in range(PERMUTATION_REPEATS):
                shuffled = raw.copy()
                shuffled[feature] = raw[feature].to_numpy()[rng.permutation(len(raw))]
                drops.append(reference - roc_auc_score(y, model.decision_function(shuffled)))
            row = table.loc[feature]
            assert row["permutation_importance"] == pytest.approx(np.mean(drops), abs=1e-12)
            assert row["permutation_std"] == pytest.approx(np.std(drops), abs=1e-12)


def test_global_importance_for_both_estimators(boosted: Pipeline, bank: Any) -> None:
    from plumbline.model.importance import global_importance

    _, test, features = bank
    y = (test["y"] == "yes").to_numpy(dtype=np.int64)
    for model in (load_model(artifacts().model), boosted):
        table = global_importance(model, test, y, features, seed=0)
        assert sorted(table["feature"]) == sorted(features)
        assert table["permutation_importance"].is_monotonic_decreasing
        assert table["mean_abs_contribution"].notna().all()
        assert (table["mean_abs_contribution"] >= 0).all()
        # the same seed, the same table; the same again from rows the caller transformed
        again = global_importance(model, test, y, features, seed=0)
        pd.testing.assert_frame_equal(table, again)
        rows = model[:-1].transform(test[features])
        given = global_importance(model, test, y, features, seed=0, transformed=rows)
        pd.testing.assert_frame_equal(table, given)


def test_a_feature_block_is_a_slice_only_when_its_columns_are_contiguous() -> None:
    from plumbline.model.importance import _columns

    x = np.arange(24.0).reshape(4, 6)
    for block in (np.array([1, 2, 3]), np.array([0, 2, 5]), np.array([4])):
        columns = _columns(block)
        assert isinstance(columns, slice) == (block[-1] - block[0] + 1 == len(block))
        np.testing.assert_array_equal(x[:, columns], x[:, block])
