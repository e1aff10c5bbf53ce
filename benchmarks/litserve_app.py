"""A plain LitServe app serving the same skops model, as LitServe's documentation shows it: a
``LitAPI`` whose ``setup`` loads the model and whose ``predict`` scores a batch (LitServe's own
dynamic batching, ``max_batch_size`` / ``batch_timeout``), run by ``LitServer``. The same
record model validates the input, as a user would add it.

    python benchmarks/litserve_app.py --model models/model.skops --port 8003
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import litserve as ls
import pandas as pd

from plumbline.core.contract import load_contract
from plumbline.model.artifact import load_model, positive_proba
from plumbline.serving.settings import load_serving_params


class BankAPI(ls.LitAPI):
    def __init__(self, model_path: Path, params_path: Path | None) -> None:
        super().__init__(max_batch_size=64, batch_timeout=0.005)
        self.model_path = model_path
        self.params_path = params_path

    def setup(self, device: str) -> None:
        params = load_serving_params(self.params_path)
        contract = load_contract(params.resolve(params.data.contract))
        self.features = contract.feature_columns(params.featurize.exclude_columns)
        self.record = contract.record_model(self.features)
        self.threshold = params.serve.threshold
        self.model = load_model(self.model_path)

    def decode_request(self, request: dict, **kwargs: Any) -> dict[str, Any]:  # type: ignore[type-arg]
        return self.record.model_validate(request).model_dump(by_alias=True)

    def predict(self, x: list[dict[str, Any]], **kwargs: Any) -> list[float]:
        frame = pd.DataFrame(x, columns=self.features)
        return positive_proba(self.model, frame).tolist()

    def encode_response(self, output: float, **kwargs: Any) -> dict[str, Any]:
        return {"probability": output, "label": int(output >= self.threshold)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.skops"))
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--api-servers", type=int, default=2)
    args = parser.parse_args()
    server = ls.LitServer(BankAPI(args.model, args.params), accelerator="cpu")
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=args.api_servers,
        generate_client_file=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
