"""What a served model version is compared with: its training profile, score profile, test metrics.

Drift is measured against the data the *serving* model was trained on, so after a retrain the
reference moves with the champion. A retrain run by the monitor keeps its version's files
under ``<state_dir>/models/<version>/``; any other version (the one the project's pipeline
built and ``plumbline promote`` registered, or the server's local fallback) is described by
the project's own outputs: ``data/features/reference_profile.json``, ``models/model.json`` and
``reports/metrics.json``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbline.core.paths import Layout

PROFILE = "reference_profile.json"
CARD = "model.json"
METRICS = "metrics.json"


class ReferenceMissing(Exception):
    """No training profile is known for a model version."""


@dataclass(frozen=True)
class ModelReference:
    version: str
    profile: dict[str, Any]
    score_profile: dict[str, Any] | None
    metrics: dict[str, float] | None
    source: str


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _safe(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", version)


class References:
    def __init__(self, state_dir: Path, project: Layout) -> None:
        self.directory = state_dir / "models"
        self.project = project
        self._cache: dict[str, tuple[tuple[float, ...], ModelReference]] = {}

    def save(self, version: str, paths: Layout) -> Path:
        """Keep a retrained version's profile, model card and test metrics."""
        target = self.directory / _safe(version)
        target.mkdir(parents=True, exist_ok=True)
        for source, name in (
            (paths.reference_profile, PROFILE),
            (paths.model_metadata, CARD),
            (paths.metrics, METRICS),
        ):
            if source.is_file():
                shutil.copyfile(source, target / name)
        self._cache.pop(version, None)
        return target

    def _files(self, version: str) -> tuple[Path, Path, Path, str]:
        own = self.directory / _safe(version)
        if (own / PROFILE).is_file():
            return own / PROFILE, own / CARD, own / METRICS, f"retrain files in {own}"
        return (
            self.project.reference_profile,
            self.project.model_metadata,
            self.project.metrics,
            "the project's data/features, models/ and reports/",
        )

    def get(self, version: str) -> ModelReference:
        profile_path, card_path, metrics_path, source = self._files(version)
        stamp = tuple(
            p.stat().st_mtime if p.is_file() else -1.0
            for p in (profile_path, card_path, metrics_path)
        )
        cached = self._cache.get(version)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        profile = _read(profile_path)
        if not profile or "features" not in profile:
            raise ReferenceMissing(
                f"no reference profile for model version {version}: "
                f"{profile_path} is missing (run `dvc repro` or `dvc pull`)"
            )
        card = _read(card_path) or {}
        metrics = _read(metrics_path)
        reference = ModelReference(
            version=version,
            profile=profile,
            score_profile=card.get("score_profile") or None,
            metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
            if isinstance(metrics, dict)
            else None,
            source=source,
        )
        self._cache[version] = (stamp, reference)
        return reference
