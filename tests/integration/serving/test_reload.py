"""Hot reload from the MLflow registry while traffic flows: no failed request, ever.

A real SQLite MLflow store (named in params.yaml) holds five versions of the model: v1 and
v2 (logistic regressions trained differently), an XGBoost and a LightGBM model, and a corrupt
one whose model file is garbage. The server serves
``models:/<name>@champion``, checks the alias every 0.5 s, and can be told to reload through
``POST /admin/reload`` (by an operator: the roles of the admin routes, on the real server).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import requests
from support.serve import (
    ADMIN_TOKEN,
    Server,
    Store,
    artifacts,
    estimator_model,
    make_store,
    metric_value,
    records,
    session_dir,
)

from plumbline.governance.identity import Users
from plumbline.governance.trail import AuditTrail
from plumbline.model.artifact import load_model

BOOSTERS = ("xgboost", "lightgbm")


@pytest.fixture(scope="module")
def store() -> Store:
    bank = artifacts()
    return make_store(
        session_dir() / "registry",
        {
            "v1": bank.model,
            "v2": bank.other_model,
            "corrupt": bank.model,
            **{name: estimator_model(name) for name in BOOSTERS},
        },
    )


@pytest.fixture(scope="module")
def server(store: Store) -> Iterator[Server]:
    # The store named in params.yaml, not in the environment: the server must not depend on
    # MLFLOW_TRACKING_URI being set.
    with Server(
        session_dir() / "reload",
        store.uri,
        uri_from="params",
        fallback_artifact=None,
        poll_interval_s=0.5,
    ) as srv:
        srv.wait("/ready")
        yield srv


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    bank = artifacts()
    return records(bank.test_frame().head(50), bank.features)


@dataclass
class Load:
    """Keeps ``threads`` clients posting single records; records every outcome."""

    url: str
    rows: list[dict]
    threads: int = 6
    outcomes: list[tuple[int, int, str]] = field(default_factory=list)  # thread, status, v
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)
        ]

    def _run(self, i: int) -> None:
        session = requests.Session()
        n = i
        while not self._stop.is_set():
            n += self.threads
            try:
                r = session.post(
                    self.url + "/predict", json=self.rows[n % len(self.rows)], timeout=30
                )
                version = r.json().get("model_version", "") if r.status_code == 200 else ""
                with self._lock:
                    self.outcomes.append((i, r.status_code, version))
            except Exception as err:  # a dropped connection is a failed request too
                with self._lock:
                    self.errors.append(repr(err))

    def __enter__(self) -> Load:
        for t in self._workers:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(30)

    def wait_for_version(self, version: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(v == version for _, _, v in self.outcomes[-20:]):
                    return
            time.sleep(0.05)
        raise AssertionError(f"responses never switched to version {version}")

    def versions(self, thread: int | None = None) -> list[str]:
        """Versions in the order a client thread saw them (all threads when None)."""
        with self._lock:
            return [v for t, _, v in self.outcomes if thread is None or t == thread]

    def failures(self) -> list[object]:
        with self._lock:
            return [o for o in self.outcomes if o[1] != 200] + list(self.errors)


def serve(server: Server, store: Store, label: str, row: dict) -> str:
    """Make ``label`` the champion and wait until the server answers with it: a test may run
    on a server that another test left on any version (xdist spreads a module's tests)."""
    store.set_champion(label)
    version = store.versions[label]
    deadline = time.monotonic() + 30
    while server.post(row).json()["model_version"] != version:
        assert time.monotonic() < deadline, f"the server never served {label}"
        time.sleep(0.1)
    return version


def reloads(server: Server, result: str) -> float:
    return metric_value(server.get("/metrics").text, "plumbline_model_reloads_total", result=result)


def test_promotion_under_load_switches_version_without_failures(
    server: Server, store: Store, rows: list[dict]
) -> None:
    v1, v2 = serve(server, store, "v1", rows[0]), store.versions["v2"]

    with Load(server.url, rows) as load:
        load.wait_for_version(v1)
        store.set_champion("v2")
        load.wait_for_version(v2)
        time.sleep(0.5)  # keep the load on after the switch
    assert load.failures() == []
    assert len(load.versions()) > 50
    assert load.versions()[-1] == v2
    # Each client (requests in sequence) sees v1 until the swap and v2 after it: one atomic
    # swap, never back and forth.
    for thread in range(load.threads):
        seen = load.versions(thread)
        assert seen[0] == v1 and seen[-1] == v2, seen
        switch = seen.index(v2)
        assert set(seen[:switch]) == {v1} and set(seen[switch:]) == {v2}, seen
    assert server.get("/ready").json()["model"]["model_version"] == v2


def test_reloads_between_estimators_under_load_fail_no_request(
    server: Server, store: Store, rows: list[dict]
) -> None:
    """Logistic regression, then XGBoost, LightGBM and another logistic regression, promoted
    while clients keep posting: every request answered, each client sees the versions in that
    order, and each version answers with its own model's scores and explanations."""
    bank = artifacts()
    frame = bank.test_frame().head(len(rows))[bank.features]
    order = ["v1", *BOOSTERS, "v2"]
    files = {"v1": bank.model, "v2": bank.other_model, **{b: estimator_model(b) for b in BOOSTERS}}
    versions = [store.versions[label] for label in order]
    serve(server, store, order[0], rows[0])

    served: dict[str, str] = {}
    with Load(server.url, rows) as load:
        load.wait_for_version(versions[0])
        for label, version in zip(order, versions, strict=True):
            if version != versions[0]:
                store.set_champion(label)
                load.wait_for_version(version, timeout=60)
            served[label] = server.get("/ready").json()["model"]["scorer"]
            # Under the same load: the served scores and ?explain=3 are this model's.
            answer = server.session.post(
                server.url + "/predict?explain=3", json=rows[:20], timeout=30
            )
            assert answer.status_code == 200, answer.text
            batch = answer.json()
            assert {a["model_version"] for a in batch} == {version}
            model = load_model(files[label])
            expected = model.predict_proba(frame.iloc[:20])[:, 1]
            np.testing.assert_allclose([a["probability"] for a in batch], expected, atol=1e-9)
            log_odds = model.decision_function(frame.iloc[:20])
            for a, lo in zip(batch, log_odds, strict=True):
                e = a["explanation"]
                total = e["base"] + sum(c["contribution"] for c in e["contributions"]) + e["other"]
                assert abs(total - lo) <= 1e-6
            time.sleep(0.3)  # every client sends a few requests to this version
    assert load.failures() == []
    assert len(load.versions()) > 50
    assert served == dict.fromkeys(order, "fast")  # the boosters keep the fast scoring path
    for thread in range(load.threads):
        seen = load.versions(thread)
        switches = [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]]
        assert switches == versions, switches
    assert server.get("/ready").json()["model"]["model_version"] == versions[-1]


def test_corrupt_version_is_rejected_and_old_keeps_serving(
    server: Server, store: Store, rows: list[dict]
) -> None:
    good = serve(server, store, "v2", rows[0])
    failures_before = reloads(server, "failure")
    with Load(server.url, rows) as load:
        load.wait_for_version(good)
        store.set_champion("corrupt")
        deadline = time.monotonic() + 30
        while reloads(server, "failure") == failures_before:
            assert time.monotonic() < deadline, "the corrupt version was never tried"
            time.sleep(0.1)
        time.sleep(1.0)  # the poller sees the alias again: it must not flap or retry
    assert load.failures() == []
    assert set(load.versions()) == {good}
    assert reloads(server, "failure") == failures_before + 1
    ready = server.get("/ready")
    assert ready.status_code == 200 and ready.json()["model"]["model_version"] == good
    assert f"model version {store.versions['corrupt']} rejected" in server.log()


def test_admin_reload_needs_the_token_and_reports_the_result(
    server: Server, store: Store, rows: list[dict]
) -> None:
    url = server.url + "/admin/reload"
    assert requests.post(url, timeout=10).status_code == 401
    assert (
        requests.post(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    )
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    # champion -> the corrupt version: an explicit reload retries it, fails, and says so.
    store.set_champion("corrupt")
    serving = server.get("/ready").json()["model"]["model_version"]
    response = requests.post(url, headers=auth, timeout=60)
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["status"] == "rejected"
    assert body["workers"][0]["version"] == store.versions["corrupt"]
    assert body["workers"][0]["model_version"] == serving
    assert server.post(rows[0]).json()["model_version"] == serving

    # champion -> v1: the reload serves it (or finds the poller already did).
    store.set_champion("v1")
    response = requests.post(url, headers=auth, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["workers"][0]["model_version"] == store.versions["v1"]
    assert server.post(rows[0]).json()["model_version"] == store.versions["v1"]


def test_admin_routes_check_roles_and_record_who_acted(server: Server) -> None:
    """Personal tokens on the running server (its HTTP processes build their authenticator
    from params): a viewer may read the rollout but not reload, an operator may; the refusal
    and the reload are in the audit trail with their actors."""
    trail = AuditTrail(server.extra_env["PLUMBLINE_AUDIT_URL"])
    users = Users(trail.engine)
    _, viewer = users.add("vera", "viewer")
    _, operator = users.add("otto", "operator")
    url = server.url + "/admin/reload"

    missing = requests.post(url, timeout=10)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="plumbline"'
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    assert requests.get(server.url + "/admin/rollout", headers=as_viewer, timeout=10).ok
    refused = requests.post(url, headers=as_viewer, timeout=10)
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    done = requests.post(url, headers={"Authorization": f"Bearer {operator}"}, timeout=60)
    assert done.status_code in (200, 409), done.text

    (refusal,) = [r for r in trail.records(actions=["refused"]) if r.actor == "vera"]
    assert refusal.subject == {"route": "/admin/reload", "method": "POST"}
    (reload,) = [r for r in trail.records(actions=["reload"]) if r.actor == "otto"]
    assert reload.via == "token" and reload.evidence["status"] == done.json()["status"]
    assert trail.verify().ok
