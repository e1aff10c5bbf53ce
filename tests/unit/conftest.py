"""The unit tier runs in this process: starting a subprocess here is a test in the wrong tier."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(
            f"a unit test started a subprocess {args[:1]!r}: move it to tests/integration"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield
