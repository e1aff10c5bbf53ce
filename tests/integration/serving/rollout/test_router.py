"""Rollout in the real server (one server for the module): a challenger that fails to load
changes no answer, shadow mode answers 1,000 requests byte for byte as rollout off does and
logs both scores for each, canary answers name who answered, and switching modes under load
fails no request. ``plumbline rollout`` drives it over HTTP.

A SQLite MLflow store holds v1 (champion), v2 (trained differently; the challenger) and a
corrupt version; the server polls the aliases every 0.5 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pytest
import requests
import yaml
from mlflow import MlflowClient
from support.cli import plumbline
from support.serve import (
    ADMIN_TOKEN,
    MODEL_NAME,
    Server,
    Store,
    artifacts,
    make_store,
    metric_value,
    records,
    session_dir,
)

from plumbline.core import yamlfile
from plumbline.core.predlog import read_log

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def store() -> Store:
    bank = artifacts()
    store = make_store(
        session_dir() / "rollout-registry",
        {"v1": bank.model, "v2": bank.other_model, "corrupt": bank.model},
    )
    _challenger(store, "corrupt")  # the first challenger the server sees does not load
    return store


def _challenger(store: Store, label: str) -> None:
    MlflowClient(tracking_uri=store.uri, registry_uri=store.uri).set_registered_model_alias(
        MODEL_NAME, "challenger", store.versions[label]
    )


@pytest.fixture(scope="module")
def server(store: Store) -> Iterator[Server]:
    with Server(
        session_dir() / "rollout",
        store.uri,
        fallback_artifact=None,
        poll_interval_s=0.5,
        prediction_log={"rotate_s": 1.0},
    ) as srv:
        srv.wait("/ready")
        yield srv


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    bank = artifacts()
    return records(bank.test_frame().head(1000), bank.features)


def rollout(server: Server, mode: str, fraction: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"mode": mode}
    if fraction is not None:
        body["canary_fraction"] = fraction
    answer = requests.post(server.url + "/admin/rollout", json=body, headers=AUTH, timeout=90)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    assert result["mode"] == mode
    return result


def _send(server: Server, rows: list[dict[str, Any]], prefix: str) -> list[bytes]:
    """One request at a time (each scored alone: the same batch as in the other run)."""
    out = []
    for i, row in enumerate(rows):
        answer = server.session.post(
            server.url + "/predict", json=row, headers={"X-Request-ID": f"{prefix}-{i}"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        out.append(answer.content.replace(f"{prefix}-{i}".encode(), b"<id>"))
    return out


def _logged(server: Server, prefix: str, count: int) -> Any:
    """The log rows of requests ``<prefix>-*`` once all ``count`` are in finished files."""
    deadline = time.monotonic() + 30
    while True:
        try:
            table = read_log(server.directory / "predictions")
            mine = table.filter(pc.starts_with(table["request_id"], f"{prefix}-"))
            if mine.num_rows >= count or time.monotonic() > deadline:
                return mine
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


def _metrics(server: Server, name: str, **labels: str) -> float:
    return metric_value(server.get("/metrics").text, name, **labels)


def test_admin_rollout_refuses_a_fraction_that_is_not_a_canary_share(server: Server) -> None:
    for body in (
        {"mode": "canary", "canary_fraction": True},  # not 1.0
        {"mode": "shadow", "canary_fraction": 0.5},
    ):
        answer = requests.post(server.url + "/admin/rollout", json=body, headers=AUTH, timeout=30)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["canary_fraction"]
    status = requests.get(server.url + "/admin/rollout", headers=AUTH, timeout=10).json()
    assert status["mode"] == "off" and not any(status["skipped"].values())


def test_a_challenger_that_fails_to_load_changes_no_answer(
    server: Server, store: Store, rows: list[dict[str, Any]]
) -> None:
    before = _send(server, rows[:100], "plain")
    status = rollout(server, "canary", 0.5)
    assert status["challenger"] is None and "rejected" in (status["challenger_error"] or "")
    assert _send(server, rows[:100], "fallback") == before
    # Its share went to the champion, each request counted as a challenger error.
    time.sleep(0.5)
    errors = _metrics(
        server, "plumbline_rollout_errors_total", arm="challenger", kind="unavailable"
    )
    assert 20 <= errors <= 80
    assert server.get("/ready").status_code == 200
    rollout(server, "off")
    _challenger(store, "v2")  # a good challenger from here on
    reload = requests.post(server.url + "/admin/reload", headers=AUTH, timeout=120)
    assert reload.status_code == 200, reload.text
    deadline = time.monotonic() + 60
    while True:  # the challenger's manager loads v2 beside the champion
        held = requests.get(server.url + "/admin/rollout", headers=AUTH, timeout=10).json()
        if (held["challenger"] or {}).get("model_version") == store.versions["v2"]:
            break
        assert time.monotonic() < deadline, held
        time.sleep(0.2)


def test_shadow_answers_1000_requests_byte_identically_and_logs_both_scores(
    server: Server, store: Store, rows: list[dict[str, Any]]
) -> None:
    off = _send(server, rows, "off")
    status = rollout(server, "shadow")
    assert status["challenger"]["model_version"] == store.versions["v2"]
    shadow = _send(server, rows, "shadow")
    assert shadow == off
    logged = _logged(server, "shadow", len(rows))
    assert logged.num_rows == len(rows)
    assert set(logged["rollout"].to_pylist()) == {"shadow"}
    assert set(logged["arm"].to_pylist()) == {"champion"}
    held = requests.get(server.url + "/admin/rollout", headers=AUTH, timeout=10).json()
    assert not any(held["skipped"].values()), held["skipped"]  # every row got its shadow score
    assert set(logged["shadow_version"].to_pylist()) == {store.versions["v2"]}
    assert logged["shadow_probability"].null_count == 0
    answered = {f"shadow-{i}": orjson.loads(body)["probability"] for i, body in enumerate(shadow)}
    for rid, p, q in zip(
        logged["request_id"].to_pylist(),
        logged["probability"].to_pylist(),
        logged["shadow_probability"].to_pylist(),
        strict=True,
    ):
        assert p == answered[rid] and q != p
    rollout(server, "off")


def test_canary_answers_name_the_version_that_answered(
    server: Server,
    store: Store,
    rows: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Switched by the CLI against the server's URL.
    monkeypatch.setenv("PLUMBLINE_ADMIN_TOKEN", ADMIN_TOKEN)
    raw = yamlfile.safe_load(server.params.read_text())
    raw["monitor"]["state_dir"] = str(tmp_path / "monitor")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    code, out, err = plumbline(
        "--params", str(params), "rollout", "canary", "--fraction", "0.5", "--server", server.url
    )
    assert code == 0, out + err
    assert "rollout canary" in err + out
    versions = []
    for i, row in enumerate(rows[:200]):
        answer = server.post(row, headers={"X-Request-ID": f"canary-{i}"})
        assert answer.status_code == 200
        versions.append(answer.json()["model_version"])
    assert set(versions) == {store.versions["v1"], store.versions["v2"]}
    logged = _logged(server, "canary", 200)
    by_id = dict(
        zip(logged["request_id"].to_pylist(), logged["model_version"].to_pylist(), strict=True)
    )
    arms = dict(zip(logged["request_id"].to_pylist(), logged["arm"].to_pylist(), strict=True))
    for i, version in enumerate(versions):
        assert by_id[f"canary-{i}"] == version
        assert arms[f"canary-{i}"] == (
            "challenger" if version == store.versions["v2"] else "champion"
        )
    code, out, err = plumbline("--params", str(params), "rollout", "status", "--server", server.url)
    assert code == 0, out + err
    assert "server: mode canary, canary fraction 0.5" in out
    assert "rollout: canary" in out  # the verdict part, from the server's log
    assert "challenger" in out and "requests" in out


def test_switching_modes_under_load_fails_no_request(
    server: Server, store: Store, rows: list[dict[str, Any]]
) -> None:
    outcomes: list[tuple[int, str]] = []
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(k: int) -> None:
        session = requests.Session()
        n = k
        while not stop.is_set():
            n += 6
            try:
                r = session.post(server.url + "/predict", json=rows[n % len(rows)], timeout=30)
                version = r.json().get("model_version", "") if r.status_code == 200 else ""
                with lock:
                    outcomes.append((r.status_code, version))
            except Exception as err:
                with lock:
                    errors.append(repr(err))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()
    try:
        for mode, fraction in (
            ("shadow", None),
            ("canary", 0.3),
            ("off", None),
            ("canary", 0.8),
            ("shadow", None),
            ("off", None),
        ):
            rollout(server, mode, fraction)
            time.sleep(0.7)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert [o for o in outcomes if o[0] != 200] == []
    assert len(outcomes) > 200
    assert {v for _, v in outcomes} == {store.versions["v1"], store.versions["v2"]}
    assert _metrics(server, "plumbline_rollout_requests_total", arm="challenger") > 0


def test_a_better_challenger_is_promoted_in_the_registry_and_the_rollout_ends(
    server: Server, store: Store, tmp_path: Path
) -> None:
    """The monitor's decider against the real server and registry (last: moves champion).

    The labelled rows are synthetic (the challenger clearly better); the gate's absolute
    thresholds read the test metrics `plumbline promote` records on a version, set here."""
    import numpy as np
    from support.paths import REPO

    from plumbline.core.contract import load_contract
    from plumbline.monitoring.rollout.decide import Decider, RegistryMover, ServerControl
    from plumbline.monitoring.settings import load_params
    from plumbline.monitoring.store import MonitorStore
    from plumbline.promotion.registry import Registry

    v1, v2 = store.versions["v1"], store.versions["v2"]
    client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    for key, value in (
        ("metric.roc_auc", "0.78"),
        ("metric.pr_auc", "0.46"),
        ("metric.brier", "0.08"),
    ):
        client.set_model_version_tag(MODEL_NAME, v2, key, value)
    rollout(server, "shadow")
    base = load_params(server.params)
    decide_cfg = base.serve.rollout.decide.model_copy(
        update={"auto": True, "min_labelled_rows": 300, "bootstrap": 200}
    )
    params = base.model_copy(
        update={
            "mlflow": base.mlflow.model_copy(update={"tracking_uri": store.uri}),
            "serve": base.serve.model_copy(
                update={"rollout": base.serve.rollout.model_copy(update={"decide": decide_cfg})}
            ),
        }
    )
    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    monitor = MonitorStore(tmp_path / "monitor.sqlite", contract, artifacts().features)
    rng = np.random.default_rng(0)
    y = (rng.random(800) < 0.3).astype(int)
    champion = 1 / (1 + np.exp(-(y * 1.0 + rng.normal(size=800) - 0.5)))
    challenger = 1 / (1 + np.exp(-(y * 2.0 + rng.normal(size=800) - 1.0)))
    now = time.time()
    with monitor.connect() as conn:
        conn.executemany(
            "INSERT INTO predictions (request_id, row, received_at, model_name, model_version, "
            "probability, label, arm, rollout, shadow_version, shadow_probability) "
            "VALUES (?, 0, ?, ?, ?, ?, ?, 'champion', 'shadow', ?, ?)",
            [
                (f"syn-{i}", now + i, MODEL_NAME, v1, float(p), int(p >= 0.5), v2, float(q))
                for i, (p, q) in enumerate(zip(champion, challenger, strict=True))
            ],
        )
        conn.executemany(
            "INSERT INTO feedback VALUES (?, 0, ?, ?)",
            [(f"syn-{i}", int(o), now) for i, o in enumerate(y)],
        )
    decider = Decider(
        params,
        monitor,
        tmp_path,
        ServerControl(server.url, ADMIN_TOKEN),
        RegistryMover(params, REPO),
    )
    decision = decider.step()
    assert decision.action == "promote" and decision.acted, decision.reason
    registry = Registry(MODEL_NAME, store.uri)
    assert registry.alias_version("champion") == v2
    event = registry.history()[-1]
    assert (event.action, event.from_version, event.to_version) == ("promote", v1, v2)
    assert event.reason.startswith("rollout: challenger better: look 2 of 4: roc_auc")
    assert "98.75 % interval" in event.reason and "800 labelled rows, shadow" in event.reason
    state = requests.get(server.url + "/admin/rollout", headers=AUTH, timeout=10).json()
    assert state["mode"] == "off"
    deadline = time.monotonic() + 30  # the server hot-reloads the new champion
    while server.post(artifacts_row()).json()["model_version"] != v2:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def artifacts_row() -> dict[str, Any]:
    bank = artifacts()
    return records(bank.test_frame().head(1), bank.features)[0]
