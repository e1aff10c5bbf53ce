"""Run the Plumbline prediction server.

    python serve/app.py [--params params.yaml] [--host 0.0.0.0] [--port 8000]

Settings come from the ``serve:`` section of params.yaml (see docs/serving.md). Environment:

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
from pathlib import Path

# Scoring runs one small batch at a time per worker: extra BLAS/OpenMP threads only fight
# the HTTP processes for the cores (and make HistGradientBoosting crawl). Set before numpy.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve/app.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params file (default: params.yaml at the project root)",
    )
    parser.add_argument("--host", default="0.0.0.0", choices=["0.0.0.0", "127.0.0.1", "::"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="uvicorn/LitServe log level (Plumbline's own lines are INFO)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    # Fetch the champion's files in a separate process while this one starts the server: the
    # MLflow import and lookup then overlap with the workers' own start (see prefetch.py).
    from plumbline.core.paths import project_root
    from plumbline.core.settings import ConfigError
    from plumbline.core.tracking import tracking_uri
    from plumbline.serving.prefetch import start as start_prefetch
    from plumbline.serving.settings import load_serving_params

    try:
        params = load_serving_params(args.params or project_root() / "params.yaml")
    except ConfigError as err:
        print(f"serve: error: {err}", file=sys.stderr)
        return 1
    prefetch, prefetch_dir = start_prefetch(
        params.mlflow.model_name,
        params.serve.model_alias,
        tracking_uri(params.mlflow, project_root()),
    )
    # Reap the helper as soon as it exits: it finishes long before the server does, and an
    # unwaited child stays a zombie for the server's whole life.
    threading.Thread(target=prefetch.wait, name="prefetch-reaper", daemon=True).start()
    try:
        # Before anything imports prometheus_client: multiprocess mode is chosen at import.
        from plumbline.serving.metrics import prepare_multiprocess_dir, remove_multiprocess_dir

        metrics_dir = prepare_multiprocess_dir()
        from plumbline.core.contract import ContractError
        from plumbline.serving.server import PlumblineServer, build_settings

        try:
            settings = build_settings(args.params, prefetch_dir=str(prefetch_dir))
        except (ConfigError, ContractError) as err:
            print(f"serve: error: {err}", file=sys.stderr)
            return 1
        try:
            try:
                server = PlumblineServer(settings)
            except ConfigError as err:
                print(f"serve: error: {err}", file=sys.stderr)
                return 1
            server.run(host=args.host, port=args.port, log_level=args.log_level)
        finally:
            remove_multiprocess_dir(metrics_dir)
    finally:
        if prefetch.poll() is None:
            prefetch.terminate()
        prefetch.wait()
        shutil.rmtree(prefetch_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
