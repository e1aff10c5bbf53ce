"""``plumbline serve``: the prediction server (:mod:`plumbline.serving.server`).

serve/app.py, the serving image's command, is a thin wrapper of this command. Settings come
from the ``serve:`` section of params.yaml (see docs/serving.md); the command reads only the
serving part of the file (the global ``--params``, or ``--params`` after ``serve``). Environment:

* ``PORT``: the default of ``--port`` (unset: 8000);
* ``MLFLOW_TRACKING_URI``: the MLflow store with ``models:/<mlflow.model_name>@champion``;
* ``PLUMBLINE_ADMIN_TOKEN``: bearer token of ``POST /admin/reload`` (unset: disabled);
* ``PLUMBLINE_PREDICT_TOKEN``: bearer token of ``POST /predict`` when ``serve.predict_auth``
  is on (then required);
* ``PROMETHEUS_MULTIPROC_DIR``: where the processes keep their metric samples (default: a new
  temporary directory; a given one is emptied at start);
* ``PLUMBLINE_ROOT``: the project root that relative paths in params.yaml start from.

Stops cleanly, with every child process, on SIGTERM (``docker stop``, Kubernetes) or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path

from plumbline.cli.context import Command, Context

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def one_thread_per_process(environ: MutableMapping[str, str] | None = None) -> bool:
    """One BLAS/OpenMP thread in every server process, unless the environment says otherwise;
    returns whether a BLAS that was already loaded had to be limited in place.

    Scoring runs one small batch at a time per worker: extra BLAS/OpenMP threads only fight
    the HTTP processes for the cores (and make HistGradientBoosting crawl). The variables act
    when a library loads: serve/app.py and ``plumbline serve`` call this before numpy is
    imported (building the CLI's parser loads none). Where a caller loaded numpy already, the
    BLAS is limited at run time (the forked workers and HTTP processes inherit that).
    """
    env = os.environ if environ is None else environ
    unset = [name for name in THREAD_VARIABLES if name not in env]
    for name in unset:
        env[name] = "1"
    if len(unset) < len(THREAD_VARIABLES) or "numpy" not in sys.modules:
        return False
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    return True


def _serve(ctx: Context, args: argparse.Namespace) -> str:
    # First, before this command imports anything more (scikit-learn's OpenMP, SciPy's BLAS).
    one_thread_per_process()
    # A long-running service: its lines carry the time (the workers' too, forked with them).
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))

    # Fetch the champion's files in a separate process while this one starts the server: the
    # MLflow import and lookup then overlap with the workers' own start (see prefetch.py).
    from plumbline.core.tracking import tracking_uri
    from plumbline.serving.prefetch import start as start_prefetch
    from plumbline.serving.settings import load_serving_params

    # The serving view of params.yaml only: a broken pipeline or monitor section does not
    # stop the server. Config and contract errors reach the CLI's one-line error (exit 1).
    params = load_serving_params(ctx.params_path)
    prefetch, prefetch_dir = start_prefetch(
        params.mlflow.model_name,
        params.serve.model_alias,
        tracking_uri(params.mlflow, ctx.root),
    )
    # Reap the helper as soon as it exits: it finishes long before the server does, and an
    # unwaited child stays a zombie for the server's whole life.
    threading.Thread(target=prefetch.wait, name="prefetch-reaper", daemon=True).start()
    try:
        # Before anything imports prometheus_client: multiprocess mode is chosen at import.
        from plumbline.serving.metrics import prepare_multiprocess_dir, remove_multiprocess_dir

        metrics_dir = prepare_multiprocess_dir()
        try:
            from plumbline.serving.server import PlumblineServer, build_settings

            settings = build_settings(ctx.params_path, prefetch_dir=str(prefetch_dir))
            server = PlumblineServer(settings)
            server.run(host=args.host, port=args.port, log_level=args.log_level)
        finally:
            remove_multiprocess_dir(metrics_dir)
    finally:
        if prefetch.poll() is None:
            prefetch.terminate()
        prefetch.wait()
        shutil.rmtree(prefetch_dir, ignore_errors=True)
    return "stopped"


def _arguments(p: argparse.ArgumentParser) -> None:
    # Also after `serve`, where serve/app.py has always taken it; SUPPRESS keeps the global
    # `plumbline --params PATH serve` when it is not given here.
    p.add_argument(
        "--params",
        type=Path,
        default=argparse.SUPPRESS,
        help="params file, as the global --params (default: params.yaml at the project root)",
    )
    p.add_argument("--host", default="0.0.0.0", choices=["0.0.0.0", "127.0.0.1", "::"])
    # A string default goes through type=int only when this command parses: a bad $PORT is
    # this command's usage error, not every command's crash.
    p.add_argument(
        "--port",
        type=int,
        default=os.environ.get("PORT", "8000"),
        help="default: $PORT, else 8000",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="uvicorn/LitServe log level (Plumbline's own lines are INFO)",
    )


COMMANDS = [
    Command(
        "serve",
        "run the prediction server: models:/<name>@champion, else models/model.skops",
        _serve,
        _arguments,
    ),
]
