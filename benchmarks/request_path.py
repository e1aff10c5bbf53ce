"""Where a /predict request's CPU goes: each step of the server's request path, timed in
process with the server's own code, per single-record request (and per request in a batch
of 64, as under load).

Steps: validation (the contract's record model, in the HTTP process), the queue hop (pickle
and a ZeroMQ PUSH/PULL over a Unix socket, there and back, as between an HTTP process and a
worker), scoring (the lean scorer), encoding (orjson, in the worker), logging (the prediction
log's append on the response path, and its background conversion to Arrow). What is left of
the server's measured CPU per request (benchmarks/serve_bench.py) is HTTP parsing and the
event loop (uvicorn, Starlette) and the metrics.

    python benchmarks/request_path.py [--model models/model.skops] [--test-split ...]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import orjson
import pandas as pd
import zmq

from plumbline.core.contract import load_contract
from plumbline.model.artifact import load_model
from plumbline.serving.metrics import ServeMetrics
from plumbline.serving.predlog_writer import Batch, PredictionLog
from plumbline.serving.schema import RequestValidator
from plumbline.serving.scorer import compile_scorer
from plumbline.serving.settings import PredictionLogConfig, load_serving_params

REPO = Path(__file__).resolve().parents[1]


def per_call_us(fn: Callable[[], Any], seconds: float = 1.0) -> float:
    for _ in range(50):
        fn()
    n = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        n += 1
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models/model.skops")
    parser.add_argument("--test-split", type=Path, default=REPO / "data/features/test.parquet")
    args = parser.parse_args()
    params = load_serving_params(REPO / "params.yaml")
    contract = load_contract(REPO / params.data.contract)
    features = contract.feature_columns(params.featurize.exclude_columns)
    frame = pd.read_parquet(args.test_split)[features].head(64)
    recs = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in frame.astype(object).to_dict(orient="records")
    ]
    validator = RequestValidator(contract, features, "reject", 10_000)
    scorer = compile_scorer(load_model(args.model), contract, features).proba
    one = json.dumps(recs[0]).encode()
    rows1, _ = validator.parse(one)
    rows64 = [validator.parse(json.dumps(r).encode())[0][0] for r in recs]

    def encode(p: float) -> bytes:
        return orjson.dumps(
            {
                "probability": p,
                "label": int(p >= 0.5),
                "model_name": "m",
                "model_version": "1",
                "request_id": "c3fcfea6354c4c8da92314a3ed257448",
            }
        )

    ipc = tempfile.mkdtemp(prefix="plumbline-path-")
    ctx = zmq.Context.instance()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    pull.bind(f"ipc://{ipc}/q")
    push.connect(f"ipc://{ipc}/q")
    message = (0, "123-4", time.monotonic(), ("rid", time.time(), rows1, True))
    answer = ("123-4", ((200, encode(0.1)), "OK", "REGULAR", 0))

    def hop() -> None:  # request there, answer back: two sends, two receives
        push.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        pickle.loads(pull.recv())
        push.send(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        pickle.loads(pull.recv())

    log = PredictionLog(
        PredictionLogConfig(dir=Path(ipc)), Path(ipc), contract, features, ServeMetrics(False, "x")
    )
    p64 = np.linspace(0, 1, 64)

    def batch(n: int) -> Batch:
        rows = rows64[:n]
        return Batch(["r"] * n, [1] * n, [0.0] * n, "m", "1", rows, p64[:n], (p64[:n] > 0.5))

    b1, b64 = batch(1), batch(64)
    steps = [
        ("validation", per_call_us(lambda: validator.parse(one)), None),
        ("queue hop (there and back)", per_call_us(hop), None),
        ("scoring", per_call_us(lambda: scorer(rows1)), per_call_us(lambda: scorer(rows64)) / 64),
        ("encoding", per_call_us(lambda: encode(0.25)), None),
        ("log append", per_call_us(lambda: log.append(b1)), None),
        (
            "log to Arrow (background)",
            per_call_us(lambda: log._table([b1])),
            per_call_us(lambda: log._table([b64])) / 64,
        ),
    ]
    log._pending.clear()
    print(f"{'step':<28} {'us/request (alone)':>20} {'us/request (batch 64)':>22}")
    total1 = total64 = 0.0
    for name, alone, batched in steps:
        b = alone if batched is None else batched
        total1 += alone
        total64 += b
        print(f"{name:<28} {alone:>20.1f} {b:>22.1f}")
    print(f"{'sum':<28} {total1:>20.1f} {total64:>22.1f}")


if __name__ == "__main__":
    main()
