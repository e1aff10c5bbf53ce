"""The monitoring subcommands of ``plumbline``: monitor, drift-report, retrain, replay, demo.

Their code is imported when one of them runs, so the other commands do not load it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

from plumbline.cli.context import Command, Context
from plumbline.core.errors import MissingInput, PlumblineError


class MonitoringError(PlumblineError):
    pass


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "monitor":
        p.add_argument("--host", default="0.0.0.0", help="interface (default: all)")
        p.add_argument(
            "--port", type=int, default=None, help="port (default: monitor.port in params.yaml)"
        )
    elif name == "drift-report":
        p.add_argument(
            "--output", type=Path, default=None, help="directory (default: monitor.report_dir)"
        )
    elif name == "retrain":
        p.add_argument(
            "--force",
            action="store_true",
            help="ignore retrain.cooldown_s and retrain.min_new_labels",
        )
    elif name == "replay":
        p.add_argument("--api", default="http://127.0.0.1:8000", help="prediction server URL")
        p.add_argument(
            "--monitor",
            default="http://127.0.0.1:8001",
            help="monitor URL for the outcomes ('' = do not post outcomes)",
        )
        p.add_argument(
            "--source",
            type=Path,
            default=None,
            help="CSV to replay (default: data.source.path when it is a CSV)",
        )
        p.add_argument(
            "--start",
            type=float,
            default=None,
            help="first row as a fraction of the file (default: "
            "featurize.train_fraction, where the training split ends)",
        )
        p.add_argument("--rows", type=int, default=None, help="at most this many rows")
        p.add_argument("--rate", type=float, default=50.0, help="rows per second")
        p.add_argument(
            "--label-delay",
            type=float,
            default=30.0,
            help="seconds from an answer to posting its true outcome",
        )
        p.add_argument(
            "--batch", type=int, default=1, help="records per request (1 = single-record requests)"
        )
        p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
        p.add_argument(
            "--id-prefix",
            default=None,
            help="request ids are <prefix>-<row> (default: replay-<unix time>)",
        )
        p.add_argument("--summary", type=Path, default=None, help="also write it as JSON")
    elif name == "demo":
        p.add_argument("--out", type=Path, default=None, help="default: reports/loop")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="another timing setting, e.g. replay.rate=40 (decision thresholds are refused)",
        )
        p.add_argument("--keep", action="store_true", help="keep the temporary directory")
        p.add_argument(
            "--render",
            type=Path,
            default=None,
            metavar="LOOP_JSON",
            help="no run: write loop.md and its PNGs again beside a recorded loop.json",
        )


def _monitor(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.monitoring.service import serve

    port = args.port or ctx.params.monitor.port
    serve(ctx.params, ctx.contract, ctx.root, args.host, port)
    return "stopped"


def _drift_report(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.monitoring import livereport
    from plumbline.monitoring.monitor import Monitor

    monitor = Monitor(ctx.params, ctx.contract, ctx.root)
    done = livereport.write(monitor, args.output)
    drift = done.snapshot.drift
    drifted = drift.drifted_features if drift else []
    return (
        f"wrote {done.path} ({drift.rows if drift else 0} rows vs model version "
        f"{done.snapshot.serving_version or 'none'}; drifted: "
        f"{', '.join(drifted) if drifted else 'none'})"
    )


def _retrain(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.monitoring.service import build

    monitor, retrainer = build(ctx.params, ctx.contract, ctx.root)
    monitor.refresh()  # the newest log files and outcomes belong in the window
    decision, result = retrainer.request(
        "manual (plumbline retrain)", force=args.force, background=False
    )
    if result is None:
        raise MonitoringError(f"no retrain: {decision.outcome}: {decision.reason}")
    if result.status == "failed":
        raise MonitoringError(
            f"retrain {result.run_id} failed: {result.reason} (logs in {result.workdir}/logs)"
        )
    return f"retrain {result.run_id} {result.status}: {result.reason}"


def _replay(ctx: Context, args: argparse.Namespace) -> str:
    from plumbline.core.settings import CsvSource
    from plumbline.monitoring.replay import Replay, load_rows

    source = ctx.params.data.source
    if args.source is not None:
        path, sep, encoding = (
            args.source,
            source.sep if isinstance(source, CsvSource) else ",",
            "utf-8",
        )
    elif isinstance(source, CsvSource):
        path, sep, encoding = ctx.params.resolve(source.path), source.sep, source.encoding
    else:
        raise MonitoringError("data.source is not a CSV file: give --source")
    if not path.is_file():
        raise MissingInput(f"{path} not found")
    start = ctx.params.featurize.train_fraction if args.start is None else args.start
    if not 0.0 <= start < 1.0:
        raise MonitoringError(f"--start must be in [0, 1), got {start}")
    if args.rate <= 0 or args.batch < 1 or args.concurrency < 1:
        raise MonitoringError("--rate must be positive, --batch and --concurrency at least 1")
    features = ctx.contract.feature_columns(ctx.params.featurize.exclude_columns)
    records, outcomes, _ = load_rows(path, sep, encoding, ctx.contract, features, start, args.rows)
    if not records:
        raise MonitoringError(f"no rows to replay from {path} at --start {start}")
    # The monitor's /feedback needs an operator: a personal token (PLUMBLINE_TOKEN) first, the
    # deprecated monitor token otherwise.
    token = os.environ.get("PLUMBLINE_TOKEN") or os.environ.get(ctx.params.monitor.token_env)
    replay = Replay(
        args.api,
        args.monitor or None,
        args.rate,
        args.label_delay,
        args.concurrency,
        args.batch,
        token,
    )
    print(
        f"replaying {len(records)} rows of {path} from {start:.0%} at {args.rate:g} rows/s "
        f"to {args.api}; outcomes to {args.monitor or '(nowhere)'} after "
        f"{args.label_delay:g}s",
        flush=True,
    )
    summary = replay.run(records, outcomes, args.id_prefix or f"replay-{int(time.time())}")
    for line in summary.lines():
        print(line)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if summary.failed_requests:
        raise MonitoringError(
            f"{summary.failed_requests} of {summary.requests} requests failed: {summary.failures}"
        )
    return (
        f"{summary.ok_rows} rows answered, {summary.feedback_posted} outcomes posted, "
        "no failed requests"
    )


def _demo(ctx: Context, args: argparse.Namespace) -> str:
    if args.render is not None:
        from plumbline.monitoring import loopreport

        if not args.render.is_file():
            raise MissingInput(f"{args.render} not found")
        written = loopreport.write(json.loads(args.render.read_text()), args.render.parent)
        return f"wrote {len(written)} files in {args.render.parent}"
    from plumbline.monitoring import demo

    settings = demo.parse_settings(args.set)
    out = args.out or ctx.root / "reports/loop"
    record = demo.run(out, settings, args.keep)
    retrains = record.get("retrains", [])
    promoted = sum(r["status"] == "promoted" for r in retrains)
    return (
        f"{record['replay']['ok_rows']} rows answered, {len(retrains)} "
        f"retrain{'s' if len(retrains) != 1 else ''} ({promoted} promoted); report in {out}"
    )


COMMANDS = [
    Command(
        "monitor",
        "run the monitor: feedback, drift/live metrics, retrain trigger",
        _monitor,
        partial(add_arguments, "monitor"),
    ),
    Command(
        "drift-report",
        "write the drift + live-performance report (md, PNG)",
        _drift_report,
        partial(add_arguments, "drift-report"),
    ),
    Command(
        "retrain",
        "retrain on the newest labelled window, then gate and promote",
        _retrain,
        partial(add_arguments, "retrain"),
    ),
    Command(
        "replay",
        "send the later part of the data as traffic, then its labels",
        _replay,
        partial(add_arguments, "replay"),
    ),
    Command(
        "demo",
        "the closed loop on the shipped defaults and data (make demo); writes reports/loop/",
        _demo,
        partial(add_arguments, "demo"),
    ),
]
