"""What a rollout costs the server: rollout off, shadow and canary, same server, same run.

Used by ``serve_bench.py`` (its ``--rollout-only`` flag runs just this part). One server
serves the champion and holds a challenger (the same artifact registered again as the
``challenger`` version: the same scoring cost, so the figures are the rollout's own overhead:
a second scoring call per batch and the wider log rows in shadow mode, the split of the batch
in canary mode). Its mode is switched through ``POST /admin/rollout`` between alternating
``wrk`` runs at concurrency 64, so each round measures the three modes back to back under the
same background load; the cost is the median over rounds of 1 - (mode req/s / off req/s).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ADMIN_TOKEN = "rollout-bench"
MODES: tuple[tuple[str, float | None], ...] = (("off", None), ("shadow", None), ("canary", 0.1))


def register_challenger(uri: str, model: Path, name: str) -> str:
    """Register ``model`` again as a new version of ``name`` with the alias ``challenger``."""
    import mlflow

    from plumbline.core.tracking import pip_requirements
    from plumbline.model.artifact import TRUSTED_TYPES, load_model

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name("bench")
    with mlflow.start_run(experiment_id=experiment.experiment_id if experiment else None):
        info = mlflow.sklearn.log_model(
            load_model(model),
            name="model",
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=pip_requirements(),
        )
    version = mlflow.register_model(info.model_uri, name)
    mlflow.MlflowClient(uri, uri).set_registered_model_alias(name, "challenger", version.version)
    return str(version.version)


def switch(url: str, mode: str, fraction: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"mode": mode}
    if fraction is not None:
        body["canary_fraction"] = fraction
    answer = requests.post(
        url + "/admin/rollout",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=120,
    )
    answer.raise_for_status()
    state: dict[str, Any] = answer.json()
    if mode != "off" and not state.get("challenger"):
        raise SystemExit(f"the challenger did not load: {state.get('challenger_error')}")
    return state


def compare(
    url: str,
    run: Callable[[str, str], Any],
    rounds: int,
) -> dict[str, Any]:
    """``run(url, label)`` is one wrk run at concurrency 64 returning a serve_bench.Run."""
    runs: dict[str, list[Any]] = {mode: [] for mode, _ in MODES}
    for mode, fraction in MODES:  # warm each mode up once (the challenger loads here)
        switch(url, mode, fraction)
        time.sleep(1.0)
    for _ in range(rounds):
        for mode, fraction in MODES:
            switch(url, mode, fraction)
            runs[mode].append(run(url, f"rollout {mode}"))
    switch(url, "off", None)
    out: dict[str, Any] = {"rounds": rounds}
    for mode, _ in MODES:
        out[mode] = {
            "rps": [r.rps for r in runs[mode]],
            "p99_ms": [r.p99_ms for r in runs[mode]],
            "errors": sum(r.errors for r in runs[mode]),
            "cpu_ms_per_request": [r.cpu_ms_per_request for r in runs[mode]],
        }
        if mode != "off":
            out[mode]["cost"] = 1 - statistics.median(
                a.rps / b.rps for a, b in zip(runs[mode], runs["off"], strict=True)
            )
    return out


def lines(result: dict[str, Any]) -> list[str]:
    rows = [
        f"rollout modes (concurrency 64, {result['rounds']} alternating rounds, one server; "
        "challenger = the same artifact as another version):"
    ]
    for mode, fraction in MODES:
        r = result[mode]
        label = mode if fraction is None else f"{mode} {fraction:g}"
        cost = f", throughput cost {r['cost']:+.1%} vs off" if "cost" in r else ""
        rows.append(
            f"  {label:<11} {statistics.median(r['rps']):>8,.0f} req/s (median; "
            + "/".join(f"{x:,.0f}" for x in r["rps"])
            + f"), p99 {statistics.median(r['p99_ms']):.1f} ms, {r['errors']} errors, "
            f"CPU {statistics.median(r['cpu_ms_per_request']):.2f} ms/req{cost}"
        )
    shadow = result["shadow"]["cost"]
    rows.append(
        f"  target: shadow costs at most 20 % of throughput: {shadow:.1%} "
        + ("(met)" if shadow <= 0.20 else "(NOT met)")
    )
    return rows
