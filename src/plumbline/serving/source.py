"""Where the served model comes from: the registry alias, or a local artifact as fallback.

The registry path resolves ``models:/<mlflow.model_name>@<serve.model_alias>`` in the MLflow
store named by ``MLFLOW_TRACKING_URI`` (else ``mlflow.tracking_uri`` in params.yaml, else the
project's SQLite store, as training uses) through :mod:`plumbline.promotion.registry`, which loads
the
pipeline with the project's skops allow-list. The local path loads ``serve.fallback_artifact``
with :func:`plumbline.model.artifact.load_model`. Either way, a model is only handed out after its
scorer compiled and passed the smoke check (:func:`plumbline.serving.scorer.compile_scorer`):
a half-loaded or broken model is never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from plumbline.core.contract import Contract
from plumbline.serving.explaining import ServedExplainer
from plumbline.serving.scorer import Scorer, compile_scorer


class SourceUnavailable(Exception):
    """The registry cannot be reached or has no model under the alias."""


class ModelLoadError(Exception):
    """A version's files could not be fetched or read."""


class PrefetchedLoadError(Exception):
    def __init__(self, version: str, reason: str) -> None:
        super().__init__(reason)
        self.version = version
        self.reason = reason


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    source: Literal["registry", "local"]
    scorer: Scorer
    loaded_at: float
    explanations: ServedExplainer | None = None  # for ?explain=K; None: not built

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.name,
            "model_version": self.version,
            "source": self.source,
            "scorer": self.scorer.kind,
            "loaded_at": self.loaded_at,
        }


@dataclass(frozen=True)
class SourceSettings:
    model_name: str
    alias: str
    tracking_uri: str
    fallback: Path | None


class ModelSource:
    def __init__(self, settings: SourceSettings, contract: Contract, features: list[str]) -> None:
        self.settings = settings
        self.contract = contract
        self.features = features
        self.configure_environment()

    @staticmethod
    def configure_environment() -> None:
        """MLflow settings for a server: fail fast, no telemetry, no progress bars."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    # --- registry ---------------------------------------------------------------------------

    def _registry(self) -> Any:
        uri = self.settings.tracking_uri
        if uri.startswith("sqlite:///"):
            # Opening a missing SQLite file would create an empty store: report it instead.
            path = Path(uri.removeprefix("sqlite:///").split("?")[0])
            if not path.is_file():
                raise SourceUnavailable(f"MLflow store {uri} does not exist")
        import mlflow

        from plumbline.promotion.registry import Registry

        # download_artifacts("models:/...") resolves the version through the *global* registry
        # URI whatever it is passed (MLflow 3.17): point the globals at our store too.
        if mlflow.get_tracking_uri() != uri:
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
        return Registry(self.settings.model_name, uri)

    def registry_version(self) -> str:
        """The version the alias points at now."""
        try:
            version = self._registry().alias_version(self.settings.alias)
        except SourceUnavailable:
            raise
        except Exception as err:
            raise SourceUnavailable(
                f"registry {self.settings.tracking_uri} unreachable: {err}"
            ) from None
        if version is None:
            raise SourceUnavailable(
                f"no version of {self.settings.model_name!r} has the alias "
                f"{self.settings.alias!r} in {self.settings.tracking_uri}"
            )
        return str(version)

    def load_registry(self, version: str) -> ServedModel:
        """Load one registry version (by number, so a moving alias cannot race the load)."""
        pipeline = self._registry().load(version)
        return self._prepare(pipeline, version, "registry")

    def load_prefetched(self, directory: Path, timeout_s: float) -> ServedModel:
        """The champion fetched at start-up by :mod:`plumbline.serving.prefetch`.

        Raises SourceUnavailable when the registry had no model for us, and
        :class:`PrefetchedLoadError` (naming the version) when its file does not load.
        """
        # Import scikit-learn and skops (about a second) while the fetch is still running.
        from plumbline.model.artifact import load_model
        from plumbline.serving.prefetch import RESULT

        result_file = directory / RESULT
        deadline = time.monotonic() + timeout_s
        while not result_file.is_file():
            if time.monotonic() > deadline:
                raise SourceUnavailable(f"the registry did not answer in {timeout_s:.0f}s")
            time.sleep(0.02)
        result = json.loads(result_file.read_text())
        if "error" in result:
            raise SourceUnavailable(result["error"])
        version = str(result["version"])
        try:
            if "load_error" in result:
                raise ModelLoadError(result["load_error"])
            pipeline = load_model(Path(result["model_file"]))
            return self._prepare(pipeline, version, "registry")
        except Exception as err:
            raise PrefetchedLoadError(version, f"{type(err).__name__}: {err}") from None

    # --- local artifact ---------------------------------------------------------------------

    def load_local(self) -> ServedModel:
        from plumbline.model.artifact import load_model

        path = self.settings.fallback
        if path is None:
            raise SourceUnavailable("no local fallback artifact is configured")
        if not path.is_file():
            raise SourceUnavailable(f"local fallback artifact {path} does not exist")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        pipeline = load_model(path)
        return self._prepare(pipeline, f"local-{digest}", "local")

    def _prepare(
        self, pipeline: Any, version: str, source: Literal["registry", "local"]
    ) -> ServedModel:
        from plumbline.serving import explaining
        from plumbline.serving.scorer import smoke_rows

        scorer = compile_scorer(pipeline, self.contract, self.features)
        explanations = explaining.build(
            pipeline, self.features, scorer, smoke_rows(self.contract, self.features)
        )
        return ServedModel(
            self.settings.model_name, version, source, scorer, time.time(), explanations
        )
