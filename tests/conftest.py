"""Fixtures shared by every tier, and the tier markers.

Tests live in tiers by what they start: ``unit`` (pure logic, in this process), ``integration``
(real DVC runs, real MLflow stores, real servers), ``e2e`` (the stack as processes around a real
Prometheus, the closed loop), ``stack`` (docker-compose.yml in podman containers: ``make
test-stack``, not part of ``make test``). Each test is marked with its tier's name, so ``-m
unit`` works from any directory. Helpers are in ``tests/support``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.paths import BANK_CONTRACT

from plumbline.core.contract import Contract, load_contract

TIERS = ("unit", "integration", "e2e", "stack")
HERE = Path(__file__).parent

# Every process the tests start finds tests/support/coverage_scope/sitecustomize.py, which
# turns coverage off in programs that run no plumbline code (DVC, the fuzzer, MLflow's server).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE / "support/coverage_scope"), os.environ.get("PYTHONPATH")) if p
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(item.path).relative_to(HERE).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)
    # Modules with slow tests first, in their order: `make test` hands whole modules to two
    # xdist workers in this order, and starting the long ones first keeps one worker from
    # finishing a long module alone at the end. A module's tests keep their own order.
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def contract() -> Contract:
    return load_contract(BANK_CONTRACT)
