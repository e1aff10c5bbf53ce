"""Estimators benchmark: the four ``train.estimator`` choices side by side, same run, same data.

Needs ``wrk`` (``apt-get install wrk``) and the pipeline's outputs (``dvc repro``): the
training and test splits and the fitted transformer. Per estimator, with its hyperparameters as
written in params.yaml (the tune stage's choice is not applied: the estimators are compared at
their shipped defaults):

1. training: wall seconds of train's own fit (:func:`plumbline.pipeline.train.fit`) on the
   training split, one thread (``OMP_NUM_THREADS=1``, the boosters' ``nthread`` = 1);
2. model file: the size of the skops artifact (transformer and estimator);
3. serving: ``serve/app.py`` with the artifact as its local model (an empty MLflow store: no
   champion, so the fallback is served), single-record POSTs with wrk at concurrency 64
   (requests/s, p99) and at concurrency 1 (p50);
4. explanations: ``POST /predict?explain=3`` at concurrency 64 beside the plain request on the
   same server, alternating; the server's CPU time per request of each and the difference,
   which is the explanation's cost; and, in this process, the CPU time of one single-row
   explanation (:class:`plumbline.model.explain.Explainer`) as a server worker computes it.

The floor, ``benchmarks/floor_app.py`` (a raw ASGI app answering the same POSTs without
scoring), runs first in the same run; each estimator's req/s at 64 is also given as a share of it.

Usage: python benchmarks/estimators_bench.py [--duration 8] [--rounds 2] [--json out.json]
       [--estimators logistic_regression,xgboost]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from serve_bench import (
    LUA,
    PYTHON,
    REPO,
    Process,
    Run,
    _wait_port,
    env,
    free_port,
    start_server,
    table,
    test_records,
    wrk,
)

from plumbline.core import yamlfile

ESTIMATORS = ["logistic_regression", "hist_gradient_boosting", "xgboost", "lightgbm"]


@dataclass
class Result:
    estimator: str
    train_s: float
    model_bytes: int
    rps_c64: float
    p99_ms_c64: float
    p50_ms_c1: float
    errors: int
    cpu_ms_plain: float  # server CPU per request, plain, concurrency 64
    cpu_ms_explain: float  # the same with ?explain=3
    explain_cpu_ms_in_process: float  # one single-row explanation, in this process


def fit_and_save(estimator: str, work: Path) -> tuple[Path, float, Any, list[str]]:
    """Train's fit with ``train.estimator`` switched; the artifact, the seconds, the model."""
    from plumbline.core import skops_compat
    from plumbline.core.contract import load_contract
    from plumbline.core.paths import layout
    from plumbline.model.artifact import TRUSTED_TYPES, save_model
    from plumbline.pipeline.settings import load_pipeline_params
    from plumbline.pipeline.train import fit

    params = load_pipeline_params(REPO / "params.yaml")
    contract = load_contract(REPO / params.data.contract)
    paths = layout(REPO)
    rows = pd.read_parquet(paths.train_split)
    transformer = skops_compat.load(paths.transformer, TRUSTED_TYPES)
    cfg = params.train.model_copy(update={"estimator": estimator})
    started = time.perf_counter()
    model, _ = fit(rows, transformer, contract, params, cfg)
    seconds = time.perf_counter() - started
    path = work / f"{estimator}.skops"
    save_model(model, path)
    return path, seconds, model, contract.feature_columns(params.featurize.exclude_columns)


def explain_cpu_ms(model: Any, features: list[str], rows: int = 200) -> float:
    """CPU milliseconds of one single-row explanation (transform excluded, as the server
    reuses its scorer's transform), the median of ``rows`` records."""
    from plumbline.model.explain import Explainer

    explainer = Explainer(model, features)
    frame = pd.read_parquet(REPO / "data/features/test.parquet").head(rows)
    x = explainer.transform_frame(frame)
    explainer.explain(x[:1])  # warm: the booster parses its bytes on first use
    times = []
    for i in range(rows):
        started = time.process_time()
        explainer.explain(x[i : i + 1])
        times.append(time.process_time() - started)
    return 1000 * float(np.median(times))


def serve_part(
    work: Path, estimator: str, artifact: Path, seconds: int, rounds: int
) -> tuple[Run, Run, list[Run], list[Run]]:
    singles = test_records(64)
    bodies = ", ".join(f"[[{json.dumps(r)}]]" for r in singles)
    scripts = {}
    for label, path in (("plain", "/predict"), ("explain", "/predict?explain=3")):
        scripts[label] = work / f"{estimator}-{label}.lua"
        scripts[label].write_text(LUA % (path, bodies))
    store = f"sqlite:///{work / f'empty-{estimator}.db'}"  # no champion: the fallback serves
    server, url, _ = start_server(work, estimator, store, fallback_artifact=str(artifact))
    try:
        wrk(url, 16, 2, scripts["plain"], "warm-up")
        wrk(url, 16, 2, scripts["explain"], "warm-up")
        c64 = wrk(url, 64, seconds, scripts["plain"], estimator, server)
        c1 = wrk(url, 1, seconds, scripts["plain"], estimator, server)
        plain: list[Run] = []
        explained: list[Run] = []
        for _ in range(rounds):
            plain.append(wrk(url, 64, seconds, scripts["plain"], "plain", server))
            explained.append(wrk(url, 64, seconds, scripts["explain"], "explain=3", server))
    finally:
        server.stop()
    return c64, c1, plain, explained


def floor_part(work: Path, seconds: int) -> tuple[Run, Run]:
    """The floor: ``benchmarks/floor_app.py``, a raw ASGI app with as many processes as the
    server's API workers, answering the same POSTs without scoring them; c64 and c1."""
    workers = yamlfile.safe_load((REPO / "params.yaml").read_text())["serve"]["api_servers"]
    script = work / "floor.lua"
    bodies = ", ".join(f"[[{json.dumps(r)}]]" for r in test_records(64))
    script.write_text(LUA % ("/predict", bodies))
    port = free_port()
    cmd = [PYTHON, "benchmarks/floor_app.py", "--workers", str(workers), "--port", str(port)]
    proc = Process(cmd, env(), work / "floor.log")
    url = f"http://127.0.0.1:{port}/predict"
    try:
        _wait_port(port, proc)
        wrk(url, 16, 2, script, "warm-up")
        c64 = wrk(url, 64, seconds, script, "raw ASGI floor", proc)
        c1 = wrk(url, 1, seconds, script, "raw ASGI floor", proc)
    finally:
        proc.stop()
    return c64, c1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="plain/explain pairs")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="plumbline-estimators-") as tmp:
        work = Path(tmp)
        floor_c64, floor_c1 = floor_part(work, args.duration)
        print(floor_c64, floor_c1, sep="\n", flush=True)
        for estimator in args.estimators.split(","):
            artifact, seconds, model, features = fit_and_save(estimator, work)
            in_process = explain_cpu_ms(model, features)
            c64, c1, plain, explained = serve_part(
                work, estimator, artifact, args.duration, args.rounds
            )
            result = Result(
                estimator=estimator,
                train_s=seconds,
                model_bytes=artifact.stat().st_size,
                rps_c64=c64.rps,
                p99_ms_c64=c64.p99_ms,
                p50_ms_c1=c1.p50_ms,
                errors=c64.errors + c1.errors + sum(r.errors for r in plain + explained),
                cpu_ms_plain=statistics.median(r.cpu_ms_per_request for r in plain),
                cpu_ms_explain=statistics.median(r.cpu_ms_per_request for r in explained),
                explain_cpu_ms_in_process=in_process,
            )
            print(result, flush=True)
            results.append(result)
    rows = [
        [
            "estimator",
            "train s",
            "model KiB",
            "req/s c64",
            "of floor",
            "p99 ms c64",
            "p50 ms c1",
            "CPU ms/req",
            "explain=3 CPU ms/req",
            "explanation CPU ms (in process)",
            "errors",
        ]
    ]
    for r in results:
        rows.append(
            [
                r.estimator,
                f"{r.train_s:.2f}",
                f"{r.model_bytes / 1024:,.0f}",
                f"{r.rps_c64:,.0f}",
                f"{r.rps_c64 / floor_c64.rps:.0%}",
                f"{r.p99_ms_c64:.1f}",
                f"{r.p50_ms_c1:.2f}",
                f"{r.cpu_ms_plain:.3f}",
                f"{r.cpu_ms_explain:.3f}",
                f"{r.explain_cpu_ms_in_process:.3f}",
                str(r.errors),
            ]
        )
    rows.append(
        [
            "raw ASGI floor",
            "-",
            "-",
            f"{floor_c64.rps:,.0f}",
            "100%",
            f"{floor_c64.p99_ms:.1f}",
            f"{floor_c1.p50_ms:.2f}",
            "-",
            "-",
            "-",
            str(floor_c64.errors + floor_c1.errors),
        ]
    )
    print()
    print(table(rows))
    if args.json:
        out = {
            "estimators": [asdict(r) for r in results],
            "floor": {"c64": asdict(floor_c64), "c1": asdict(floor_c1)},
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
