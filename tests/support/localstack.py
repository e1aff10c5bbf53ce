"""The loopback copies of monitoring/ (:mod:`plumbline.monitoring.localstack`), always made
from this repository's files (the tests' projects may set another PLUMBLINE_ROOT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plumbline.monitoring import localstack
from support.paths import MONITORING


def rules(directory: Path, pending: str | None = None, source: Path = MONITORING) -> Path:
    return localstack.rules(directory, pending, source)


def prometheus(directory: Path, *args: Any, source: Path = MONITORING, **kwargs: Any) -> Path:
    return localstack.prometheus(directory, *args, source=source, **kwargs)


def alertmanager(
    directory: Path,
    monitor_url: str,
    timings: dict[str, str] | None = None,
    source: Path = MONITORING,
) -> Path:
    return localstack.alertmanager(directory, monitor_url, timings, source)
