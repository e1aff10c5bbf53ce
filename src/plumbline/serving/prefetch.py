"""Fetch the champion's model file while the server starts, on the other core.

Importing MLflow and opening its store takes about a second, and a scoring worker must also
import scikit-learn and skops before it can load anything: done one after the other in the
worker, that is most of the time to ready. So the main process starts this module as a
separate process first thing; it resolves ``models:/<name>@<alias>`` and downloads that
version's files while the server's own processes start, and writes ``result.json``:
``{"version", "model_file"}`` or ``{"error"}``. The worker then loads the file with the
project's skops allow-list (:func:`plumbline.model.artifact.load_model`) and smoke-checks it like
any
other version. Later alias checks go through :mod:`plumbline.promotion.registry` as usual.

    python -m plumbline.serving.prefetch NAME ALIAS TRACKING_URI DEST_DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from plumbline.core import yamlfile

RESULT = "result.json"


def fetch(name: str, alias: str, uri: str, dest: Path) -> dict[str, Any]:
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///").split("?")[0])
        if not path.is_file():  # opening it would create an empty store
            return {"error": f"MLflow store {uri} does not exist"}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow
        from mlflow import MlflowClient

        # download_artifacts("models:/...") below resolves through the global URIs.
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = str(client.get_model_version_by_alias(name, alias).version)
    except Exception as err:
        return {"error": f"registry {uri}: no {name}@{alias}: {err}"}
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}",
                dst_path=str(dest / "artifacts"),
                tracking_uri=uri,
                registry_uri=uri,
            )
        )
        # The same checks as plumbline.promotion.registry.Registry.load: a skops-serialized sklearn
        # flavor, never a pickle.
        flavor = (yamlfile.safe_load((local / "MLmodel").read_text()).get("flavors") or {}).get(
            "sklearn"
        ) or {}
        if flavor.get("serialization_format") != "skops":
            raise ValueError("not a skops-serialized sklearn model; refusing to unpickle it")
        model_file = local / flavor.get("pickled_model", "model.skops")
    except Exception as err:
        return {"version": version, "load_error": f"{type(err).__name__}: {err}"}
    return {"version": version, "model_file": str(model_file)}


def start(name: str, alias: str, uri: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the fetch in its own process; returns it and the directory of its result."""
    dest = Path(tempfile.mkdtemp(prefix="plumbline-prefetch-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "plumbline.serving.prefetch", name, alias, uri, str(dest)],
        stdin=subprocess.DEVNULL,
    )
    return proc, dest


def main(argv: list[str]) -> int:
    name, alias, uri, dest = argv
    directory = Path(dest)
    directory.mkdir(parents=True, exist_ok=True)
    result = fetch(name, alias, uri, directory)
    tmp = directory / (RESULT + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.rename(directory / RESULT)  # atomic: the worker never reads half a file
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
