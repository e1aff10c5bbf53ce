"""``plumbline rollout status | shadow | canary --fraction F | off``.

The mode is switched on the server (``POST /admin/rollout`` at ``--server``, default
``serve.rollout.server_url``) with the token in ``PLUMBLINE_TOKEN`` (a personal token:
``status`` needs the role viewer, a switch operator), or else the deprecated one in
``serve.admin_token_env``. ``status`` prints the server's rollout (mode, both versions,
per-arm requests and errors) and the verdict per metric: from a monitor's ``GET /rollout``
with ``--monitor URL``, else computed here from the monitor's store (``monitor.state_dir``)
after reading the newest prediction-log files.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from plumbline.cli.context import Command, Context
from plumbline.core.errors import PlumblineError

ACTIONS = ("status", "shadow", "canary", "off")


class RolloutError(PlumblineError):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS, help="show the rollout, or switch its mode")
    p.add_argument(
        "--fraction", type=float, default=None, help="canary: share the challenger answers"
    )
    p.add_argument("--server", default=None, help="server URL (default: serve.rollout.server_url)")
    p.add_argument(
        "--monitor",
        default=None,
        help="status: the monitor's URL for the verdict (default: computed from the local "
        "monitor store)",
    )
    p.add_argument("--json", action="store_true", help="status as JSON")


def _arm_lines(status: dict[str, Any]) -> list[str]:
    out = [
        f"server: mode {status['mode']}"
        + (f", canary fraction {status['canary_fraction']:g}" if status["mode"] == "canary" else "")
        + f"; champion {(status.get('champion') or {}).get('model_version', 'none')}, "
        f"challenger (@{status.get('challenger_alias')}) "
        f"{(status.get('challenger') or {}).get('model_version', 'not loaded')}"
    ]
    if status.get("challenger_error"):
        out.append(f"challenger error: {status['challenger_error']}")
    for arm, values in (status.get("arms") or {}).items():
        calls = values.get("scoring_calls") or 0
        rows = values.get("scoring_rows") or 0
        per_call = values.get("scoring_seconds", 0.0) / calls * 1e3 if calls else 0.0
        per_row = values.get("scoring_seconds", 0.0) / rows * 1e6 if rows else 0.0
        out.append(
            f"  {arm:<10} {int(values.get('requests', 0)):>8} requests, "
            f"{int(values.get('errors', 0))} errors, {per_call:.2f} ms per scoring call, "
            f"{per_row:.1f} µs per row"
        )
    skipped = {k: int(v) for k, v in (status.get("skipped") or {}).items() if v}
    if skipped:
        out.append(
            "  challenger skipped (not errors): "
            + ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(skipped.items()))
        )
    if status.get("shadow_paused"):
        out.append(
            "  shadow scoring paused: the challenger went over serve.rollout.shadow_budget_ms "
            "too often (the circuit breaker); it resumes after shadow_cooloff_s"
        )
    return out


def unreachable(decide: Any, mode: str, fraction: float) -> str | None:
    """Why the verdict's window can never hold min_labelled_rows of each arm, or None.

    The window is the newest ``window_rows`` labelled rows of both arms together: in canary
    mode the challenger's expected share of it is ``window_rows * canary_fraction``."""
    if mode != "canary":
        return None
    expected = {
        "challenger": decide.window_rows * fraction,
        "champion": decide.window_rows * (1.0 - fraction),
    }
    short = {arm: n for arm, n in expected.items() if n < decide.min_labelled_rows}
    if not short:
        return None
    arm, n = min(short.items(), key=lambda item: item[1])
    return (
        f"no verdict can ever be reached: the {arm} is expected to hold {n:.0f} of the "
        f"{decide.window_rows} labelled rows in the window (canary fraction {fraction:g}), "
        f"fewer than min_labelled_rows {decide.min_labelled_rows}; raise "
        "serve.rollout.decide.window_rows or the canary fraction"
    )


def _local_report(ctx: Context) -> dict[str, Any] | None:
    from plumbline.monitoring.rollout.arms import evaluate
    from plumbline.monitoring.store import MonitorStore

    params = ctx.params
    features = ctx.contract.feature_columns(params.featurize.exclude_columns)
    store = MonitorStore(
        params.resolve(params.monitor.state_dir) / "monitor.sqlite", ctx.contract, features
    )
    store.ingest_log(
        params.resolve(params.monitor.prediction_log_dir or params.serve.prediction_log.dir)
    )
    report = evaluate(store, params.serve.rollout.decide, params.serve.threshold)
    return report.to_dict() if report else None


def _report_lines(report: dict[str, Any]) -> list[str]:
    from plumbline.model.stats import Comparison
    from plumbline.monitoring.rollout.arms import ArmsReport

    parsed = ArmsReport(
        **{
            **{k: v for k, v in report.items() if k != "verdict"},
            "comparisons": {k: Comparison(**v) for k, v in report["comparisons"].items()},
        }
    )
    return parsed.lines()


def run(ctx: Context, args: argparse.Namespace) -> str:
    import requests

    from plumbline.monitoring.rollout.decide import ServerControl, server_url

    params = ctx.params
    # A personal token (PLUMBLINE_TOKEN) first; the deprecated admin token otherwise.
    token = os.environ.get("PLUMBLINE_TOKEN") or os.environ.get(params.serve.admin_token_env)
    control = ServerControl(args.server or server_url(params), token)
    if args.action != "status":
        if args.fraction is not None and args.action != "canary":
            raise RolloutError("--fraction is for canary mode")
        try:
            status = control.set_mode(args.action, args.fraction)
        except (requests.RequestException, RuntimeError) as err:
            raise RolloutError(f"could not switch the rollout: {err}") from None
        print("\n".join(_arm_lines(status)))
        return f"rollout {status['mode']}"
    server: dict[str, Any] | None
    try:
        server = control.status()
    except (requests.RequestException, RuntimeError) as err:
        server = None
        problem = f"server not reachable: {err}"
    if args.monitor:
        try:
            answer = requests.get(args.monitor.rstrip("/") + "/rollout", timeout=30)
            answer.raise_for_status()
        except requests.RequestException as err:
            raise RolloutError(f"monitor {args.monitor}: {err}") from None
        report = answer.json().get("report")
    else:
        report = _local_report(ctx)
    if args.json:
        print(json.dumps({"server": server, "report": report}, indent=2, default=str))
    else:
        print("\n".join(_arm_lines(server)) if server else problem)
        if server:
            never = unreachable(
                params.serve.rollout.decide,
                str(server.get("mode")),
                float(server.get("canary_fraction") or 0.0),
            )
            if never:
                print(never)
        print("\n".join(_report_lines(report)) if report else "no rollout rows logged yet")
    verdict = report["verdict"] if report else "no rollout yet"
    return f"mode {server['mode'] if server else 'unknown'}; verdict: {verdict}"


COMMANDS = [
    Command(
        "rollout",
        "challenger beside the champion: status | shadow | canary | off",
        run,
        add_arguments,
    ),
]
