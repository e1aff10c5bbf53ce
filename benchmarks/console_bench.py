"""The console's cost: the server-side time of ``GET /console`` with 100,000 audit records and a
week of metrics in a real Prometheus, and the time to first render in headless Chromium.

    python benchmarks/console_bench.py [--records 100000] [--days 7] [--runs 20]

Run it after `make`: the page reads the project's MLflow registry (mlflow.db: the champion
and its lineage). The audit trail is a temporary SQLite file of ``--records`` records; the
week of metrics is written into a temporary Prometheus (Debian's package) with `promtool tsdb
create-blocks-from openmetrics`: the monitor's live ROC AUC, estimate and PSI per feature, and
the server's request counter, one sample a minute. In the same run, the floor: a raw ASGI app
that returns the same page's bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

FEATURES = ("age", "job", "marital", "education", "euribor3m", "month", "contact", "poutcome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openmetrics(days: float, end: float) -> str:
    """A week of the series the console charts, one sample a minute, in OpenMetrics text."""
    lines: dict[str, list[str]] = {
        "plumbline_live_roc_auc": ["# TYPE plumbline_live_roc_auc gauge"],
        "plumbline_live_estimated_roc_auc": ["# TYPE plumbline_live_estimated_roc_auc gauge"],
        "plumbline_drift_psi": ["# TYPE plumbline_drift_psi gauge"],
        "plumbline_http_requests": ["# TYPE plumbline_http_requests counter"],
    }
    start = int(end - days * 86400)
    requests = 0.0
    for i, t in enumerate(range(start, int(end), 60)):
        version = "1" if i < (end - start) / 120 else "2"
        wave = math.sin(i / 500)
        lines["plumbline_live_roc_auc"].append(
            f'plumbline_live_roc_auc{{job="plumbline-monitor",model_version="{version}"}} '
            f"{0.78 + 0.02 * wave:.4f} {t}"
        )
        lines["plumbline_live_estimated_roc_auc"].append(
            f'plumbline_live_estimated_roc_auc{{job="plumbline-monitor",model_version="{version}"}}'
            f" {0.79 + 0.015 * wave:.4f} {t}"
        )
        for k, feature in enumerate(FEATURES):
            lines["plumbline_drift_psi"].append(
                f'plumbline_drift_psi{{job="plumbline-monitor",feature="{feature}",kind="num"}} '
                f"{0.02 * (k + 1) * (1.5 + wave):.4f} {t}"
            )
        requests += 60 * (40 + 20 * wave)
        lines["plumbline_http_requests"].append(
            f'plumbline_http_requests_total{{job="plumbline-api",route="/predict",method="POST",'
            f'status="200"}} {requests:.0f} {t}'
        )
    return "\n".join(line for block in lines.values() for line in block) + "\n# EOF\n"


def start_prometheus(folder: Path, days: float, end: float) -> tuple[subprocess.Popen[bytes], str]:
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if not promtool or not prometheus:
        sys.exit("needs Debian's prometheus (promtool and prometheus): apt-get install prometheus")
    data = folder / "tsdb"
    source = folder / "week.om"
    source.write_text(openmetrics(days, end))
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
    )
    config = folder / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1m}\nscrape_configs: []\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--storage.tsdb.retention.time={int(days) + 30}d",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import requests

    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("Prometheus did not start")


def fill_trail(path: Path, n: int) -> Any:
    import sqlalchemy as sa

    from plumbline.governance.identity import Actor, iso, now_utc
    from plumbline.governance.trail import (
        GENESIS,
        AuditTrail,
        canonical,
        record_hash,
        records_table,
    )

    trail = AuditTrail(f"sqlite:///{path}")
    # A busy trail: mostly rollout verdicts, reloads, refusals and retrains; one record in
    # fifty moves or judges a version of this model.
    routine = ("rollout_verdict", "reload", "refused", "retrain_start", "retrain_end")
    rare = ("gate", "register", "promote", "rollback", "approve")
    rows = []
    prev = GENESIS
    start = now_utc().timestamp() - n * 6
    for i in range(1, n + 1):
        from datetime import UTC, datetime

        fields = {
            "seq": i,
            "at": iso(datetime.fromtimestamp(start + i * 6, UTC)),
            "actor": "ops",
            "via": "token",
            "action": rare[i // 50 % len(rare)] if i % 50 == 0 else routine[i % len(routine)],
            "subject": {"model": "plumbline-classifier", "version": str(i % 40 + 1)},
            "evidence": {"n": i},
            "comment": f"record {i}",
            "prev_hash": prev,
        }
        prev = record_hash(fields)
        rows.append(
            {
                **fields,
                "subject": canonical(fields["subject"]),
                "evidence": canonical(fields["evidence"]),
                "hash": prev,
            }
        )
    with trail.engine.begin() as conn:
        for k in range(0, len(rows), 10_000):
            conn.execute(sa.insert(records_table), rows[k : k + 10_000])
    del Actor
    return trail


def build_app(folder: Path, prometheus: str, trail: Any) -> tuple[Any, str]:
    import os

    from fastapi import FastAPI

    from plumbline.governance.identity import Authenticator, Users
    from plumbline.monitoring.console.app import Console, install
    from plumbline.monitoring.console.session import Sessions
    from plumbline.monitoring.console.view import Sources, Verifier, VersionCache
    from plumbline.monitoring.monitor import Snapshot
    from plumbline.monitoring.settings import ConsoleConfig, load_params
    from plumbline.promotion.registry import Registry

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'mlflow.db'}")
    params = load_params(REPO / "params.yaml")
    console = ConsoleConfig(prometheus_url=prometheus, alertmanager_url=None, window_h=24 * 7)
    params = params.model_copy(
        update={"monitor": params.monitor.model_copy(update={"console": console})}
    )
    registry = Registry.from_params(params, REPO, trail)
    if registry.alias_version("champion") is None:
        sys.exit("the project's registry has no champion: run `make` first")
    users = Users(trail.engine)
    token = users.add("bench-viewer", "viewer")[1]
    app = FastAPI()
    install(
        app,
        Console(
            sessions=Sessions(Authenticator(users, params.auth), secret=b"b" * 32),
            sources=Sources(
                params=params,
                trail=trail,
                registry=lambda: registry,
                snapshot=Snapshot,
                rollout_report=lambda: {"report": None, "decision": None},
                server_rollout=lambda: {"mode": "off", "champion": None, "arms": {}},
                repos=[REPO],
            ),
            approvals=params.promotion.approvals,
            server_url="http://127.0.0.1:9",
            cache=VersionCache(),
            verifier=Verifier(trail, 3600),
        ),
    )
    return app, token


def timed_get(app: Any, token: str) -> tuple[float, bytes]:
    from support.asgi import call

    started = time.perf_counter()
    answer = call(app, "GET", "/console", cookies={"plumbline_session": token})
    took = time.perf_counter() - started
    assert answer.status == 200, answer.body[:300]
    return took, answer.body


def floor_app(body: bytes) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def first_render(app: Any, token: str) -> list[float]:
    """Milliseconds from navigation to the first contentful paint, in headless Chromium, with
    the app served by uvicorn."""
    import uvicorn
    from support.browser import offline_page

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    out = []
    try:
        with offline_page() as offline:
            page = offline.page
            page.context.add_cookies(
                [
                    {
                        "name": "plumbline_session",
                        "value": token,
                        "url": f"http://127.0.0.1:{port}/console",
                    }
                ]
            )
            for _ in range(5):
                page.goto(f"http://127.0.0.1:{port}/console")
                # The paint entry is queued after load: wait for it, not for a fixed time.
                paint = page.evaluate(
                    """() => new Promise(done => {
                        const seen = () => performance.getEntriesByName('first-contentful-paint');
                        if (seen().length) { done(seen()[0].startTime); return; }
                        new PerformanceObserver(list => {
                            const e = list.getEntriesByName('first-contentful-paint');
                            if (e.length) { done(e[0].startTime); }
                        }).observe({type: 'paint', buffered: true});
                    })"""
                )
                out.append(float(paint))
            assert offline.blocked == [], offline.blocked
    finally:
        server.should_exit = True
        thread.join(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        now = time.time()
        prom, url = start_prometheus(folder, args.days, now)
        try:
            trail = fill_trail(folder / "governance.sqlite", args.records)
            app, token = build_app(folder, url, trail)
            cold, body = timed_get(app, token)
            warm = sorted(timed_get(app, token)[0] for _ in range(args.runs))
            floor = sorted(timed_get_floor(floor_app(body)) for _ in range(args.runs))
            median, floor_median = statistics.median(warm), statistics.median(floor)
            print(f"GET /console, {args.records:,} audit records, {args.days:g} days of metrics:")
            print(f"  first request (no cache)      {cold * 1e3:8.1f} ms")
            print(
                f"  median of {args.runs} after            {median * 1e3:8.1f} ms "
                f"(p90 {warm[int(len(warm) * 0.9) - 1] * 1e3:.1f} ms), page {len(body):,} bytes"
            )
            print(f"  floor: raw ASGI, same bytes   {floor_median * 1e3:8.3f} ms")
            print(f"  ratio page / floor            {median / floor_median:8.0f}")
            paints = first_render(app, token)
            print(
                "first contentful paint in Chromium (5 loads): "
                + ", ".join(f"{p:.0f}" for p in paints)
                + f" ms; median {statistics.median(paints):.0f} ms"
            )
        finally:
            prom.terminate()
            prom.wait(10)


def timed_get_floor(app: Any) -> float:
    from support.asgi import call

    started = time.perf_counter()
    call(app, "GET", "/console")
    return time.perf_counter() - started


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
