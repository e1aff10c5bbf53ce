"""The LitServe and prometheus_client internals the server uses (serving/compat.py) are all
there, with the signatures and fields it relies on; and the check notices when one moves."""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
from typing import Any

import litserve
import pytest
from litserve import LitServer
from litserve.utils import ResponseBufferItem
from support.paths import REPO

from plumbline.serving import compat


def test_installed_internals_are_the_tested_ones() -> None:
    assert compat.problems() == []
    compat.check()


def test_the_serve_extra_pins_the_tested_litserve() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert f"litserve=={compat.TESTED_LITSERVE}" in project["optional-dependencies"]["serve"]
    lock = (REPO / "requirements.lock").read_text().splitlines()
    assert f"litserve=={compat.TESTED_LITSERVE}" in lock
    assert litserve.__version__ == compat.TESTED_LITSERVE


def test_each_internal_by_name() -> None:
    for name, expected in compat.SERVER_METHODS.items():
        params = tuple(inspect.signature(getattr(LitServer, name)).parameters)
        assert params[: len(expected)] == expected, name
    worker = compat.inference_worker()
    assert tuple(inspect.signature(worker).parameters) == compat.INFERENCE_WORKER_PARAMS
    fields = [f.name for f in dataclasses.fields(ResponseBufferItem)]
    assert fields[: len(compat.RESPONSE_BUFFER_FIELDS)] == list(compat.RESPONSE_BUFFER_FIELDS)
    item = compat.response_buffer_item(event=None)
    item.response = [(200, b"{}"), "ok"]  # as the response reader stores it
    assert compat.response_payload(item) == (200, b"{}")
    assert issubclass(compat.uvicorn_server(), __import__("uvicorn").Server)


def test_a_moved_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def launch(self: Any, api: Any, extra: Any) -> None: ...

    monkeypatch.setattr(LitServer, "launch_inference_worker", launch)
    monkeypatch.delattr(LitServer, "_start_worker_monitoring")
    monkeypatch.setattr(litserve, "__version__", "9.9.9")
    found = compat.problems()
    assert any("litserve 9.9.9 is installed" in p for p in found)
    assert any("LitServer._start_worker_monitoring is gone" in p for p in found)
    assert any("LitServer.launch_inference_worker('self', 'api', 'extra')" in p for p in found)
    with pytest.raises(RuntimeError, match=f"pin litserve=={compat.TESTED_LITSERVE}"):
        compat.check()


def test_a_changed_worker_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def inference_worker(lit_api: Any, device: Any, worker_id: Any) -> None: ...

    monkeypatch.setattr(compat, "inference_worker", lambda: inference_worker)
    assert any(p.startswith("inference_worker(") for p in compat.problems())


def test_a_changed_histogram_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "HISTOGRAM_FIELDS", ("_upper_bounds", "_bucket_values"))
    assert compat.problems() == ["prometheus_client Histogram no longer sets self._bucket_values"]
