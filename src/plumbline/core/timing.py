"""Where a command spends its seconds: named phases (``with phase("mlflow"): ...``) that the
CLI adds to its summary line, so a user (and benchmarks/pipeline_bench.py) can see what part of
a stage is tracking rather than work."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

_spent: defaultdict[str, float] = defaultdict(float)


@contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        _spent[name] += time.perf_counter() - started


def spent() -> dict[str, float]:
    """Seconds per phase so far in this process."""
    return dict(_spent)
