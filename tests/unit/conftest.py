"""The unit tier runs in this process: starting a subprocess here is a test in the wrong tier."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def matplotlib_font_cache() -> None:
    """On a new machine matplotlib's first import builds its font cache by running fc-list:
    a one-time set-up of the library, not a subprocess of the code under test."""
    import matplotlib.font_manager  # noqa: F401


@pytest.fixture(autouse=True)
def no_subprocess(matplotlib_font_cache: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(
            f"a unit test started a subprocess {args[:1]!r}: move it to tests/integration"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield
