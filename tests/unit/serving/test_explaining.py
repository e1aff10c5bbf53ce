"""The worker's side of ?explain=K: the K parser, the load-time smoke check of the explainer,
and explained answers equal to the batch explainer's."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from support.serve import artifacts

from plumbline.core.contract import Contract
from plumbline.model.artifact import load_model
from plumbline.serving.explaining import ServedExplainer, build, explained_output, parse_k
from plumbline.serving.scorer import compile_scorer, smoke_rows
from plumbline.serving.source import ServedModel


def test_k_must_be_a_feature_count() -> None:
    assert parse_k(None, 19) == 0
    assert parse_k("1", 19) == 1 and parse_k("19", 19) == 19
    for bad in ("0", "20", "-1", "abc", "", "2.0", " 3"):
        with pytest.raises(ValueError, match="from 1 to 19"):
            parse_k(bad, 19)


def _boosted(contract: Contract):  # type: ignore[no-untyped-def]
    import pandas as pd

    from plumbline.model.artifact import assemble, build_estimator
    from plumbline.model.features import build_transformer
    from plumbline.model.settings import FeaturizeConfig, TrainConfig

    a = artifacts()
    train = pd.read_parquet(a.root / "train.parquet")
    transformer = build_transformer(contract, a.features, FeaturizeConfig())
    x = transformer.fit_transform(train[a.features])
    cfg = TrainConfig(estimator="hist_gradient_boosting")
    estimator = build_estimator(cfg).fit(x, contract.encode_target(train["y"]))
    return assemble(transformer, estimator)


def _served(contract: Contract, estimator: str = "lr") -> tuple[ServedModel, list[tuple]]:
    a = artifacts()
    pipeline = load_model(a.model) if estimator == "lr" else _boosted(contract)
    scorer = compile_scorer(pipeline, contract, a.features)
    explanations = build(pipeline, a.features, scorer, smoke_rows(contract, a.features))
    rows = list(a.test_frame()[a.features].astype(object).itertuples(index=False, name=None))
    return ServedModel("m", "1", "local", scorer, 0.0, explanations), rows


@pytest.mark.parametrize("estimator", ["lr", "hgb"])
def test_explained_answers_add_up_and_are_logged(contract: Contract, estimator: str) -> None:
    model, rows = _served(contract, estimator)
    assert model.explanations is not None and model.explanations.explainer is not None
    rows = rows[:50]
    p = model.scorer.proba(rows)
    logged: list[str | None] = [None] * (len(rows) + 5)
    status, body = explained_output(
        model, "r", rows, False, 2, p.tolist(), [int(x >= 0.5) for x in p], logged, 5
    )
    assert status == 200
    answers = orjson.loads(body)
    for answer, prob in zip(answers, p, strict=True):
        e = answer["explanation"]
        total = e["base"] + sum(c["contribution"] for c in e["contributions"]) + e["other"]
        assert abs(total - np.log(prob / (1 - prob))) < 1e-6
    assert logged[:5] == [None] * 5
    assert [orjson.loads(t) for t in logged[5:]] == [a["explanation"] for a in answers]


def test_a_model_without_explainer_answers_409_with_the_reason(contract: Contract) -> None:
    model, rows = _served(contract)
    none = ServedModel("m", "7", "local", model.scorer, 0.0, ServedExplainer(None, "no baseline"))
    status, body = explained_output(none, "r", rows[:1], True, 1, [0.1], [0], [None], 0)
    assert status == 409
    assert "version 7" in orjson.loads(body)["detail"] and "no baseline" in body.decode()


def test_an_explainer_that_disagrees_with_the_pipeline_is_not_served(contract: Contract) -> None:
    a = artifacts()
    pipeline = load_model(a.model)
    scorer = compile_scorer(pipeline, contract, a.features)
    rows = smoke_rows(contract, a.features)
    # the smoke rows' range ends saturate the probabilities; the check is in log-odds
    assert build(pipeline, a.features, scorer, rows).explainer is not None

    class Shifted:
        """A transform that drifted from the pipeline's."""

        kind = "shifted"

        def proba(self, rows):  # type: ignore[no-untyped-def]
            return scorer.proba(rows)

        def transform(self, rows):  # type: ignore[no-untyped-def]
            return scorer.transform(rows) * 1.01

    served = build(pipeline, a.features, Shifted(), rows)
    assert served.explainer is None and "differ from the log-odds" in served.reason


def test_a_batch_is_explained_in_one_call_like_request_by_request(contract: Contract) -> None:
    from plumbline.serving.explaining import explain_batch, explain_rows

    model, rows = _served(contract)
    assert model.explanations is not None
    requests = [
        ("a", 0.0, rows[0:3], False, 2),
        ("b", 0.0, rows[3:4], True, 0),  # did not ask
        ("c", 0.0, rows[4:5], True, 5),
    ]
    batch = explain_batch(model, requests)
    assert batch[1] is None
    for got, (_, _, request_rows, _, k) in zip(batch, requests, strict=True):
        if not k:
            continue
        want = explain_rows(model.explanations, model.scorer, request_rows, k)
        assert got is not None and len(got) == len(want) == len(request_rows)
        for g, w in zip(got, want, strict=True):  # equal up to the float rounding of batching
            assert [c["feature"] for c in g["contributions"]] == [
                c["feature"] for c in w["contributions"]
            ]
            assert [c["value"] for c in g["contributions"]] == [
                c["value"] for c in w["contributions"]
            ]
            np.testing.assert_allclose(
                [c["contribution"] for c in g["contributions"]] + [g["other"], g["base"]],
                [c["contribution"] for c in w["contributions"]] + [w["other"], w["base"]],
                rtol=0,
                atol=1e-12,
            )
