"""``POST /predict?explain=K``: the worker's side of per-decision explanations.

A served model gets an :class:`plumbline.model.explain.Explainer` when it is loaded, checked on the
smoke rows like the scorer: base plus contributions, computed on the scorer's transform, must
equal the pipeline's own log-odds (``decision_function``, within 1e-6), else the model
is served without explanations (a request asking for them gets 409 naming the reason). Only the
requests of a batch that ask for an explanation pay for it; the others are answered as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from plumbline.model.explain import Attribution, Explainer, ExplainUnsupported, explanation_json

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
AGREEMENT = 1e-6  # log-odds of explainer vs pipeline on the smoke rows


@dataclass(frozen=True)
class ServedExplainer:
    explainer: Explainer | None
    reason: str  # why there is none ("" when there is one)


def parse_k(text: str | None, features: int) -> int:
    """The K of ``?explain=K`` (0 when absent); ValueError with the reason when invalid."""
    if text is None:
        return 0
    if not text.isdigit() or not 1 <= int(text) <= features:
        raise ValueError(f"explain must be an integer from 1 to {features} (the features)")
    return int(text)


def build(
    pipeline: Any, features: Sequence[str], scorer: Any, rows: Sequence[Row]
) -> ServedExplainer:
    """The model's explainer, smoke-checked against the scorer, or the reason there is none."""
    try:
        explainer = Explainer(pipeline, features)
        attribution = explainer.explain(transform(explainer, scorer, rows))
    except ExplainUnsupported as err:
        return ServedExplainer(None, str(err))
    except Exception as err:  # explanations must never keep a good model from serving
        log.exception("explanations disabled: building the explainer failed")
        return ServedExplainer(None, f"building the explainer failed: {type(err).__name__}")
    # In log-odds, not via the probabilities: the smoke rows' range ends saturate them.
    from plumbline.serving.scorer import rows_frame

    expected = np.asarray(pipeline.decision_function(rows_frame(rows, features)), dtype=float)
    total = attribution.base + attribution.contributions.sum(axis=1)
    worst = float(np.max(np.abs(total - expected))) if len(rows) else 0.0
    if not math.isfinite(worst) or worst > AGREEMENT:
        log.warning("explanations disabled: they differ from the log-odds by %.3g", worst)
        return ServedExplainer(None, f"the explanations differ from the log-odds by {worst:.3g}")
    return ServedExplainer(explainer, "")


def transform(explainer: Explainer, scorer: Any, rows: Sequence[Row]) -> np.ndarray:
    """The transformed rows: the lean scorer's own transform when it has one (verified equal to
    the pipeline's at load), else the pipeline's transformer."""
    if hasattr(scorer, "transform"):
        return np.asarray(scorer.transform(rows), dtype=np.float64)
    from plumbline.serving.scorer import rows_frame

    return explainer.transform_frame(rows_frame(rows, explainer.features))


def explain_rows(
    served: ServedExplainer, scorer: Any, rows: Sequence[Row], k: int
) -> list[dict[str, Any]]:
    assert served.explainer is not None
    explainer = served.explainer
    attribution = explainer.explain(transform(explainer, scorer, rows))
    return explanation_json(attribution, rows, explainer.features, k)


def explain_batch(model: Any, requests: Sequence[Any]) -> list[list[dict[str, Any]] | None]:
    """Per request of a batch: its explanations if it asked (K > 0) and the model gives them,
    else None. One transform and one explain call for all the asking requests' rows."""
    out: list[list[dict[str, Any]] | None] = [None] * len(requests)
    served: ServedExplainer | None = model.explanations
    if served is None or served.explainer is None:
        return out
    explainer = served.explainer
    rows: list[Row] = []
    spans: list[tuple[int, int, int, int]] = []  # request, first row, rows, K
    for i, (_, _, request_rows, _, k) in enumerate(requests):
        if k:
            spans.append((i, len(rows), len(request_rows), k))
            rows.extend(request_rows)
    if not rows:
        return out
    attribution = explainer.explain(transform(explainer, model.scorer, rows))
    for i, first, n, k in spans:
        part = Attribution(
            attribution.base,
            attribution.contributions[first : first + n],
            attribution.log_odds[first : first + n],
        )
        out[i] = explanation_json(part, rows[first : first + n], explainer.features, k)
    return out


def explained_output(
    model: Any,
    request_id: str,
    rows: Sequence[Row],
    single: bool,
    k: int,
    probabilities: list[float],
    labels: list[int],
    logged: list[str | None],
    start: int,
    explained: list[dict[str, Any]] | None = None,
) -> tuple[int, bytes]:
    """The (status, body) of one request that asked for explanations (``explained``: already
    computed by :func:`explain_batch`, else computed here).

    The explanations also go into ``logged`` (one JSON text per row of the batch, at the
    request's rows) for the prediction log.
    """
    import orjson

    served: ServedExplainer | None = model.explanations
    if served is None or served.explainer is None:
        reason = served.reason if served is not None else "no explainer was built"
        detail = f"model version {model.version} gives no explanations: {reason}"
        return 409, orjson.dumps({"detail": detail})
    if explained is None:
        explained = explain_rows(served, model.scorer, rows, k)
    answers = [
        {
            "probability": p,
            "label": lab,
            "model_name": model.name,
            "model_version": model.version,
            "request_id": request_id,
            "explanation": e,
        }
        for p, lab, e in zip(probabilities, labels, explained, strict=True)
    ]
    for i, e in enumerate(explained):
        logged[start + i] = orjson.dumps(e).decode()
    return 200, orjson.dumps(answers[0] if single else answers)
