"""Serving benchmark: the Plumbline server against its floor and its peers, same run, same model.

Needs ``wrk`` (``apt-get install wrk``) and the pipeline's outputs ``models/model.skops`` and
``data/features/test.parquet`` (``dvc repro``). The targets besides the server:

* the floor: ``benchmarks/floor_app.py``, a raw ASGI app on uvicorn with as many HTTP
  processes as the server, answering a fixed prediction;
* plain LitServe: ``benchmarks/litserve_app.py``, the same skops model behind a ``LitAPI``
  with LitServe's own batching, as its documentation shows;
* ``mlflow models serve`` on the registered champion (``--env-manager local``, as many
  workers as the server has HTTP processes), POST /invocations with ``dataframe_records``;
* the naive app: ``benchmarks/naive_app.py`` (FastAPI calling ``predict_proba`` per request).

Everything runs on loopback, in this order:

1. cold start to ready: ``python serve/app.py`` until ``GET /ready`` answers 200, with the
   model in a (temporary) SQLite MLflow registry as ``@champion`` and from the local
   artifact, three times each;
2. single-record POSTs at concurrency 1, 16 and 64 (wrk, keep-alive, 64 different records),
   against the server and the naive app, and at 1 and 64 against the floor, plain LitServe and
   mlflow serve; requests/s, p50, p99, errors, and the server's ratio to each;
3. Prometheus cost: the server with ``serve.metrics: true`` and ``false`` side by side,
   alternating concurrency-64 runs (throughput and the servers' CPU time per request);
4. one 10,000-row request end to end (client sends, server validates, scores and answers,
   client parses the JSON), median of several;
5. rollout modes: one server switched between rollout off, shadow and canary (0.1) through
   ``POST /admin/rollout``, alternating concurrency-64 runs (``rollout_bench.py``;
   ``--rollout-only`` runs just this part);
6. explanations: ``POST /predict?explain=3`` beside the plain request on one server,
   alternating concurrency-64 runs (throughput and the server's CPU time per request).
   ``--only-explain`` runs this part alone.

Usage: python benchmarks/serve_bench.py [--duration 10] [--rounds 2] [--json out.json]
       python benchmarks/serve_bench.py --rollout-only | --only-explain [--rounds 3]
Targets (issue 4): >= 2,000 req/s at concurrency 64 with p99 <= 60 ms and no errors, >= 8x the
naive app, p50 <= 8 ms at concurrency 1, 10k rows <= 250 ms, ready <= 5 s, metrics <= 5 %.
Goals (issue 10), at concurrency 64: >= 8x plain LitServe, >= 40 % of the raw-ASGI floor.
Target (issue 12): ``explain=3`` costs at most 2x the plain request's server CPU per request
(logistic regression).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from plumbline.core import yamlfile

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MODEL = REPO / "models" / "model.skops"
TEST_SPLIT = REPO / "data" / "features" / "test.parquet"
MODEL_NAME = "plumbline-bench"

LUA = """
wrk.method = "POST"
wrk.path = "%s"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass
class Run:
    target: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_ms_per_request: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_records(n: int) -> list[dict[str, Any]]:
    import pandas as pd

    from plumbline.core.contract import load_contract
    from plumbline.serving.settings import load_serving_params

    params = load_serving_params(REPO / "params.yaml")
    contract = load_contract(REPO / params.data.contract)
    features = contract.feature_columns(params.featurize.exclude_columns)
    frame = pd.read_parquet(TEST_SPLIT)[features]
    frame = pd.concat([frame] * (n // len(frame) + 1), ignore_index=True).head(n)
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame.astype(object).to_dict(orient="records")
    ]


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    out.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return out


class Process:
    def __init__(self, cmd: list[str], environment: dict[str, str], log: Path) -> None:
        self.log = log
        self._log = log.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, url: str, timeout: float = 60, path: str = "/ready") -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"server exited:\n{self.log.read_text()}")
            try:
                if requests.get(url + path, timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except requests.ConnectionError:
                pass
            time.sleep(0.02)
        sys.exit(f"not ready in {timeout}s:\n{self.log.read_text()}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server and all of its processes, including those that
        have exited and been reaped (their time is in the parent's ``children_*``)."""
        import psutil

        try:
            main = psutil.Process(self.proc.pid)
            t = main.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            children = main.children(recursive=True)
        except psutil.NoSuchProcess:
            return 0.0
        for p in children:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Plain LitServe exits on SIGTERM but leaves its children running: end them too, so
        # that they cannot take CPU from the targets measured after it.
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            child.kill()
        psutil.wait_procs(alive, timeout=5)
        self._log.close()


def server_params(work: Path, name: str, **serve: Any) -> Path:
    raw = yamlfile.safe_load((REPO / "params.yaml").read_text())
    raw["mlflow"]["model_name"] = MODEL_NAME
    section = dict(raw.get("serve") or {})
    section["fallback_artifact"] = str(MODEL)
    section["prediction_log"] = dict(
        section.get("prediction_log") or {}, dir=str(work / f"predictions-{name}")
    )
    section.update(serve)
    raw["serve"] = section
    path = work / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def start_server(
    work: Path, name: str, tracking_uri: str, extra_env: dict[str, str] | None = None, **serve: Any
) -> tuple[Process, str, float]:
    port = free_port()
    params = server_params(work, name, **serve)
    proc = Process(
        [
            PYTHON,
            "serve/app.py",
            "--params",
            str(params),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env(MLFLOW_TRACKING_URI=tracking_uri, **(extra_env or {})),
        work / f"{name}.log",
    )
    url = f"http://127.0.0.1:{port}"
    return proc, url, proc.wait_ready(url)


def rollout_part(work: Path, uri: str, script: Path, seconds: int, rounds: int) -> dict[str, Any]:
    """Part 5: rollout off vs shadow vs canary on one server (see rollout_bench.py)."""
    import rollout_bench

    rollout_bench.register_challenger(uri, MODEL, MODEL_NAME)
    server, url, _ = start_server(
        work, "rollout", uri, extra_env={"PLUMBLINE_ADMIN_TOKEN": rollout_bench.ADMIN_TOKEN}
    )
    try:
        deadline = time.monotonic() + 120  # steady state: after the replacement preload
        while "preloaded" not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        wrk(url, 16, 2, script, "warm-up")
        result = rollout_bench.compare(
            url, lambda u, label: wrk(u, 64, max(5, seconds // 2), script, label, server), rounds
        )
    finally:
        server.stop()
    print("\n".join(rollout_bench.lines(result)), flush=True)
    return result


def register(work: Path) -> str:
    """A temporary MLflow store with models/model.skops as version 1 @champion."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from plumbline.core.tracking import pip_requirements
    from plumbline.model.artifact import TRUSTED_TYPES, load_model

    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("bench", artifact_location=(work / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            load_model(MODEL),
            name="model",
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=pip_requirements(),
        )
    version = mlflow.register_model(info.model_uri, MODEL_NAME)
    mlflow.MlflowClient(uri, uri).set_registered_model_alias(
        MODEL_NAME, "champion", version.version
    )
    return uri


def wrk(
    url: str,
    concurrency: int,
    seconds: int,
    script: Path,
    target: str,
    server: Process | None = None,
) -> Run:
    threads = min(concurrency, 2)
    cpu_before = server.cpu_seconds() if server else 0.0
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, int(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    r = json.loads(line.removeprefix("RESULT "))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    cpu = (server.cpu_seconds() - cpu_before) if server else 0.0
    return Run(
        target,
        concurrency,
        r["requests"] / (r["duration_us"] / 1e6),
        r["p50_us"] / 1000,
        r["p99_us"] / 1000,
        errors,
        r["requests"],
        1000 * cpu / max(r["requests"], 1),
    )


def run_peers(work: Path, uri: str, script: Path, mlflow_script: Path, seconds: int) -> list[Run]:
    """The floor, plain LitServe and mlflow serve, one after the other, at 1 and 64."""
    api_servers = int(
        yamlfile.safe_load((REPO / "params.yaml").read_text())["serve"]["api_servers"]
    )
    peers = [
        (
            "raw ASGI floor",
            [PYTHON, "benchmarks/floor_app.py", "--workers", str(api_servers), "--port"],
            script,
            "/predict",
            None,
        ),
        (
            "plain LitServe",
            [
                PYTHON,
                "benchmarks/litserve_app.py",
                "--model",
                str(MODEL),
                "--api-servers",
                str(api_servers),
                "--port",
            ],
            script,
            "/predict",
            "/health",
        ),
        (
            "mlflow serve",
            [
                PYTHON,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                f"models:/{MODEL_NAME}@champion",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-w",
                str(api_servers),
                "-p",
            ],
            mlflow_script,
            "/invocations",
            "/ping",
        ),
    ]
    runs: list[Run] = []
    for name, cmd, lua, path, ready in peers:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # mlflow serve runs `uvicorn` from PATH: this interpreter's.
        path = f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        environment = env(MLFLOW_TRACKING_URI=uri, PATH=path)
        proc = Process([*cmd, str(port)], environment, work / f"{name}.log")
        try:
            if ready is None:
                _wait_port(port, proc)
            else:
                proc.wait_ready(url, timeout=120, path=ready)
            wrk(url + path, 16, 2, lua, "warm-up")
            for c in (1, 64):
                runs.append(wrk(url + path, c, seconds, lua, name, proc))
                print(runs[-1], flush=True)
        finally:
            proc.stop()
    return runs


def _wait_port(port: int, proc: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            sys.exit(f"exited:\n{proc.log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} not open in {timeout}s")


def batch_latency(url: str, body: bytes, repeats: int) -> list[float]:
    session = requests.Session()
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        response = session.post(
            url + "/predict", data=body, timeout=60, headers={"Content-Type": "application/json"}
        )
        parsed = response.json()
        elapsed = time.perf_counter() - started
        assert response.status_code == 200 and len(parsed) == 10_000, response.text[:200]
        if i:  # the first one warms up
            times.append(elapsed)
    return times


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def explain_comparison(
    work: Path, store: str, singles: list[dict[str, Any]], seconds: int, rounds: int
) -> dict[str, Any]:
    """Plain vs ?explain=3 on one server, alternating runs at concurrency 64."""
    scripts = {}
    bodies = ", ".join(f"[[{json.dumps(r)}]]" for r in singles)
    for label, path in (("plain", "/predict"), ("explain=3", "/predict?explain=3")):
        scripts[label] = work / f"explain-{label.replace('=', '')}.lua"
        scripts[label].write_text(LUA % (path, bodies))
    server, url, _ = start_server(work, "explain", store)
    try:
        probe = requests.post(url + "/predict?explain=3", json=singles[0], timeout=10)
        probe.raise_for_status()
        assert "explanation" in probe.json(), probe.text
        for script in scripts.values():
            wrk(url, 16, 2, script, "warm-up")
        runs: dict[str, list[Run]] = {"plain": [], "explain=3": []}
        for _ in range(rounds):
            for label, script in scripts.items():
                runs[label].append(wrk(url, 64, seconds, script, label, server))
                print(runs[label][-1], flush=True)
    finally:
        server.stop()
    cpu_ratio = statistics.median(
        e.cpu_ms_per_request / p.cpu_ms_per_request
        for p, e in zip(runs["plain"], runs["explain=3"], strict=True)
    )
    rps_ratio = statistics.median(
        e.rps / p.rps for p, e in zip(runs["plain"], runs["explain=3"], strict=True)
    )
    summary = {
        label: {
            "rps": [r.rps for r in rs],
            "p50_ms": [r.p50_ms for r in rs],
            "p99_ms": [r.p99_ms for r in rs],
            "cpu_ms_per_request": [r.cpu_ms_per_request for r in rs],
            "errors": sum(r.errors for r in rs),
        }
        for label, rs in runs.items()
    }
    summary["cpu_ratio"] = cpu_ratio
    summary["rps_ratio"] = rps_ratio
    rows = [["request", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms/req"]]
    for label, rs in runs.items():
        rows.append(
            [
                label,
                f"{statistics.mean(r.rps for r in rs):,.0f}",
                f"{statistics.mean(r.p50_ms for r in rs):.2f}",
                f"{statistics.mean(r.p99_ms for r in rs):.1f}",
                str(sum(r.errors for r in rs)),
                f"{statistics.mean(r.cpu_ms_per_request for r in rs):.3f}",
            ]
        )
    print()
    print(table(rows))
    print(
        f"explain=3 vs plain at concurrency 64 ({rounds} alternating pairs, median of paired "
        f"ratios): server CPU per request {cpu_ratio:.2f}x (target <= 2x), throughput "
        f"{rps_ratio:.0%} of plain",
        flush=True,
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=4, help="metrics on/off pairs")
    parser.add_argument("--batch-repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--model", type=Path, default=None, help="the skops model to serve")
    parser.add_argument("--test-split", type=Path, default=None, help="records to send")
    parser.add_argument(
        "--rollout-only",
        action="store_true",
        help="only part 5: rollout off vs shadow vs canary at concurrency 64",
    )
    parser.add_argument(
        "--only-explain",
        action="store_true",
        help="only part 6: plain vs ?explain=3 at concurrency 64",
    )
    args = parser.parse_args()
    global MODEL, TEST_SPLIT
    MODEL = (args.model or MODEL).resolve()
    TEST_SPLIT = (args.test_split or TEST_SPLIT).resolve()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    for needed in (MODEL, TEST_SPLIT):
        if not needed.is_file():
            sys.exit(f"{needed} is missing: run `dvc repro` first")

    work = Path(tempfile.mkdtemp(prefix="plumbline-serve-bench-"))
    procs: list[Process] = []
    results: dict[str, Any] = {"runs": []}
    try:
        singles = test_records(64)
        if args.only_explain:
            store = f"sqlite:///{work / 'no-registry.db'}"
            results["explain"] = explain_comparison(
                work, store, singles, args.duration, args.rounds
            )
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
            return
        script = work / "post.lua"
        script.write_text(LUA % ("/predict", ", ".join(f"[[{json.dumps(r)}]]" for r in singles)))
        mlflow_script = work / "invocations.lua"
        mlflow_script.write_text(
            LUA
            % (
                "/invocations",
                ", ".join(f"[[{json.dumps({'dataframe_records': [r]})}]]" for r in singles),
            )
        )
        if args.rollout_only:
            results["rollout"] = rollout_part(
                work, register(work), script, args.duration, args.rounds
            )
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
            return
        big = json.dumps(test_records(10_000)).encode()
        missing_store = f"sqlite:///{work / 'no-registry.db'}"

        # 1. cold start, three times each way (median)
        uri = register(work)
        starts: dict[str, list[float]] = {"registry": [], "local": []}
        for i in range(3):
            for label, store in (("registry", uri), ("local", missing_store)):
                proc, url, seconds = start_server(work, f"cold-{label}-{i}", store)
                proc.stop()
                starts[label].append(seconds)
        results["ready_s"] = starts
        ready_registry = statistics.median(starts["registry"])
        ready_local = statistics.median(starts["local"])
        print(
            f"cold start to ready: {starts['registry']} s from the registry, "
            f"{starts['local']} s from the local artifact",
            flush=True,
        )

        # 2. the server and the naive app, concurrency 1/16/64
        server, url, _ = start_server(work, "server", uri)
        procs.append(server)
        # After ready the main process preloads what a replacement worker imports (seconds
        # of CPU at low priority); measure the steady state, after it.
        deadline = time.monotonic() + 120
        while "preloaded" not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        runs: list[Run] = []
        wrk(url, 16, 2, script, "warm-up")
        for c in (1, 16, 64):
            runs.append(wrk(url, c, args.duration, script, "plumbline", server))
            print(runs[-1], flush=True)
        times = batch_latency(url, big, args.batch_repeats)
        results["batch_10k_ms"] = {
            "median": statistics.median(times) * 1000,
            "max": max(times) * 1000,
        }
        print(
            f"10k-row request: median {results['batch_10k_ms']['median']:.0f} ms, "
            f"max {results['batch_10k_ms']['max']:.0f} ms",
            flush=True,
        )

        server.stop()  # idle, but not sharing the cores with the peers
        peers = run_peers(work, uri, script, mlflow_script, args.duration)
        runs += peers

        naive_port = free_port()
        naive = Process(
            [PYTHON, "benchmarks/naive_app.py", "--model", str(MODEL), "--port", str(naive_port)],
            env(),
            work / "naive.log",
        )
        procs.append(naive)
        naive_url = f"http://127.0.0.1:{naive_port}"
        naive.wait_ready(naive_url)
        server.stop()
        wrk(naive_url, 16, 2, script, "warm-up")
        for c in (1, 16, 64):
            runs.append(wrk(naive_url, c, args.duration, script, "naive FastAPI", naive))
            print(runs[-1], flush=True)
        naive.stop()

        # 3. Prometheus on / off, alternating
        on, on_url, _ = start_server(work, "metrics-on", missing_store, metrics=True)
        off, off_url, _ = start_server(work, "metrics-off", missing_store, metrics=False)
        procs += [on, off]
        wrk(on_url, 16, 2, script, "warm-up")
        wrk(off_url, 16, 2, script, "warm-up")
        rps: dict[str, list[float]] = {"on": [], "off": []}
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.rounds):
            for label, u, p in (("on", on_url, on), ("off", off_url, off)):
                run = wrk(u, 64, max(5, args.duration // 2), script, label, p)
                rps[label].append(run.rps)
                cpu[label].append(run.cpu_ms_per_request)
        on.stop()
        off.stop()
        # 5. rollout off / shadow / canary on one server
        results["rollout"] = rollout_part(work, uri, script, args.duration, args.rounds)
        # Paired, adjacent runs: the median of the per-round ratios resists the noise of a
        # shared machine better than the ratio of means.
        cost = 1 - statistics.median(a / b for a, b in zip(rps["on"], rps["off"], strict=True))
        cpu_cost = statistics.median(a / b for a, b in zip(cpu["on"], cpu["off"], strict=True)) - 1
        results["metrics"] = {
            "rps_on": rps["on"],
            "rps_off": rps["off"],
            "cost": cost,
            "cpu_ms_on": cpu["on"],
            "cpu_ms_off": cpu["off"],
            "cpu_cost": cpu_cost,
        }

        naive_by_c = {r.concurrency: r for r in runs if r.target == "naive FastAPI"}
        rows = [["target", "conc.", "req/s", "p50 ms", "p99 ms", "errors", "x naive", "CPU ms/req"]]
        for r in runs:
            ratio = r.rps / naive_by_c[r.concurrency].rps if r.concurrency in naive_by_c else 0
            rows.append(
                [
                    r.target,
                    str(r.concurrency),
                    f"{r.rps:,.0f}",
                    f"{r.p50_ms:.2f}",
                    f"{r.p99_ms:.1f}",
                    str(r.errors),
                    f"{ratio:.1f}",
                    f"{r.cpu_ms_per_request:.2f}",
                ]
            )
        print()
        print(table(rows))
        print()
        ours = {r.concurrency: r for r in runs if r.target == "plumbline"}
        ratio_rows = [["Plumbline vs", "conc.", "their req/s", "Plumbline req/s", "ratio"]]
        ratios: dict[str, dict[int, float]] = {}
        for r in runs:
            if r.target == "plumbline" or r.concurrency not in (1, 64):
                continue
            ratio = ours[r.concurrency].rps / r.rps
            ratios.setdefault(r.target, {})[r.concurrency] = ratio
            shown = f"{ratio:.0%} of it" if r.target == "raw ASGI floor" else f"{ratio:.1f}x"
            ratio_rows.append(
                [
                    r.target,
                    str(r.concurrency),
                    f"{r.rps:,.0f}",
                    f"{ours[r.concurrency].rps:,.0f}",
                    shown,
                ]
            )
        results["ratios"] = ratios
        print(table(ratio_rows))
        print(
            "goals at concurrency 64: >= 8x plain LitServe "
            f"({ratios.get('plain LitServe', {}).get(64, 0):.1f}x), >= 40% of the floor "
            f"({ratios.get('raw ASGI floor', {}).get(64, 0):.0%})"
        )
        print()
        print(
            f"10,000-row request, end to end: median {results['batch_10k_ms']['median']:.0f}"
            f" ms, max {results['batch_10k_ms']['max']:.0f} ms "
            f"({args.batch_repeats} runs)"
        )
        print(
            f"cold start to /ready 200 (median of 3): {ready_registry:.2f} s (registry "
            f"@champion, SQLite store), {ready_local:.2f} s (local artifact); all: "
            + ", ".join(f"{k} " + "/".join(f"{x:.1f}" for x in v) for k, v in starts.items())
        )
        print(
            f"Prometheus instrumentation (concurrency 64, {args.rounds} alternating pairs, "
            f"median of paired ratios): {statistics.mean(rps['on']):,.0f} req/s with, "
            f"{statistics.mean(rps['off']):,.0f} without -> throughput cost {cost:+.1%}; "
            f"server CPU per request {statistics.mean(cpu['on']):.3f} vs "
            f"{statistics.mean(cpu['off']):.3f} ms -> {cpu_cost:+.1%}"
        )
        # 6. explanations, beside the plain request
        results["explain"] = explain_comparison(
            work, missing_store, singles, args.duration, args.rounds
        )
        results["runs"] = [asdict(r) for r in runs]
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
