"""The naive baseline of the serving benchmark: FastAPI calling the model per request.

What a first version of a model API usually is: one uvicorn process, the same contract-derived
Pydantic record model for validation, and the fitted pipeline's ``predict_proba`` on a
one-row DataFrame for every request.

    python benchmarks/naive_app.py --model models/model.skops --port 8001
"""

# No `from __future__ import annotations`: FastAPI must see the record model itself.
import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd
import uvicorn
from fastapi import FastAPI

from plumbline.core.contract import load_contract
from plumbline.model.artifact import load_model, positive_proba
from plumbline.serving.settings import load_serving_params


def build_app(model_path: Path, params_path: Path | None = None) -> FastAPI:
    params = load_serving_params(params_path)
    contract = load_contract(params.resolve(params.data.contract))
    features = contract.feature_columns(params.featurize.exclude_columns)
    record_model: Any = contract.record_model(features)
    model = load_model(model_path)
    threshold = params.serve.threshold
    app = FastAPI(title="naive baseline")

    @app.post("/predict")
    def predict(record: record_model) -> dict[str, Any]:  # type: ignore[valid-type]
        frame = pd.DataFrame([record.model_dump(by_alias=True)], columns=features)
        probability = float(positive_proba(model, frame)[0])
        return {"probability": probability, "label": int(probability >= threshold)}

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.skops"))
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.model, args.params), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
