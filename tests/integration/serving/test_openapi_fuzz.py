"""The OpenAPI document is the contract: schemathesis (``st run --checks all``) against the real
server, every route, with /predict behind its bearer token; and the token itself (missing,
wrong, right; off by default)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.serve import Artifacts, Server, artifacts, records, session_dir

pytestmark = pytest.mark.slow

PREDICT_TOKEN = "test-predict-token"
# The server under test takes at most this many records per request (and its schema says so,
# so the fuzzer also sends longer lists to be refused). Generating a case costs about linearly
# in its records; lists of up to five hold every shape a longer one does.
MAX_RECORDS = 5
PREDICT_CASES = 2000  # generated cases the run must reach
# schemathesis' coverage phase adds a few hundred deterministic cases to the fuzzing phase's
# --max-examples; asking for fewer fuzzed ones still reaches PREDICT_CASES (asserted below).
FUZZ_EXAMPLES = 1600
FUZZ_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def bank() -> Artifacts:
    return artifacts()


def _server(bank: Artifacts, name: str, **serve: object) -> Server:
    directory = session_dir() / name
    srv = Server(
        directory,
        f"sqlite:///{directory / 'no-store.db'}",
        fallback_artifact=str(bank.model),
        poll_interval_s=30,
        max_records=MAX_RECORDS,
        **serve,
    )
    srv.extra_env["PLUMBLINE_PREDICT_TOKEN"] = PREDICT_TOKEN
    return srv


@pytest.fixture(scope="module")
def guarded(bank: Artifacts) -> Iterator[Server]:
    with _server(bank, "fuzz-auth", predict_auth=True) as srv:
        srv.wait("/ready", timeout=90)
        yield srv


def _schemathesis() -> str:
    found = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    assert Path(found).exists(), "schemathesis is a dev dependency (pyproject.toml)"
    return found


def _st_run(server: Server, tmp: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [
            _schemathesis(),
            "run",
            server.url + "/openapi.json",
            "--checks",
            "all",
            "--seed",
            "20261202",
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            *args,
        ],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=FUZZ_TIMEOUT_S,
        # The fuzzer is a tool, not the code under test: coverage measures the server only.
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS")},
            "NO_COLOR": "1",
            "SCHEMATHESIS_HOOKS": "",
        },
    )
    return done.returncode, done.stdout + done.stderr


def _generated(output: str) -> tuple[int, int]:
    match = re.search(r"(\d+) generated, (\d+) passed", output)
    assert match, output[-3000:]
    return int(match[1]), int(match[2])


def test_schemathesis_predict(guarded: Server, tmp_path: Path) -> None:
    code, output = _st_run(
        guarded,
        tmp_path,
        "--include-path",
        "/predict",
        "--max-examples",
        str(FUZZ_EXAMPLES),
        "--header",
        f"Authorization: Bearer {PREDICT_TOKEN}",
    )
    assert code == 0, output[-6000:]
    generated, passed = _generated(output)
    assert generated >= PREDICT_CASES and passed == generated, output[-3000:]


def test_schemathesis_every_other_route(guarded: Server, tmp_path: Path) -> None:
    code, output = _st_run(guarded, tmp_path, "--exclude-path", "/predict", "--max-examples", "100")
    assert code == 0, output[-6000:]
    assert "Selected: 8/9" in output and "Tested: 8" in output, output[-3000:]
    generated, passed = _generated(output)
    assert generated >= 100 and passed == generated


def test_openapi_documents_the_real_media_types(guarded: Server) -> None:
    doc = guarded.get("/openapi.json").json()
    paths = doc["paths"]
    assert list(paths["/health"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert list(paths["/"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
    assert guarded.get("/health").headers["content-type"].startswith("text/plain")
    assert guarded.get("/").headers["content-type"].startswith("text/plain")
    predict = paths["/predict"]["post"]
    assert predict["security"] == [{"predictToken": []}]
    assert doc["components"]["securitySchemes"]["predictToken"]["scheme"] == "bearer"
    assert "401" in predict["responses"] and "Retry-After" in predict["responses"]["503"]["headers"]


def test_predict_token_missing_wrong_right(guarded: Server, bank: Artifacts) -> None:
    record = records(bank.test_frame().head(1), bank.features)[0]
    url = guarded.url + "/predict"
    missing = requests.post(url, json=record, timeout=30)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="plumbline"'
    wrong = requests.post(url, json=record, timeout=30, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert "wrong bearer token" in wrong.json()["detail"]
    right = requests.post(
        url, json=record, timeout=30, headers={"Authorization": f"Bearer {PREDICT_TOKEN}"}
    )
    assert right.status_code == 200, right.text
    assert 0.0 <= right.json()["probability"] <= 1.0
    # The probes stay open: a load balancer has no token.
    assert requests.get(guarded.url + "/ready", timeout=10).status_code == 200
    assert requests.get(guarded.url + "/health", timeout=10).status_code == 200


def test_predict_token_is_off_by_default(bank: Artifacts) -> None:
    with _server(bank, "auth-default") as srv:  # the token variable is set, auth is not on
        srv.wait("/ready", timeout=90)
        record = records(bank.test_frame().head(1), bank.features)[0]
        assert srv.post(record).status_code == 200
        assert "security" not in srv.get("/openapi.json").json()["paths"]["/predict"]["post"]


def test_auth_on_without_a_token_refuses_to_start(bank: Artifacts) -> None:
    srv = _server(bank, "auth-no-token", predict_auth=True)
    srv.extra_env.pop("PLUMBLINE_PREDICT_TOKEN")
    srv.start()
    try:
        assert srv.proc is not None and srv.proc.wait(60) == 1
        assert "serve.predict_auth is on but PLUMBLINE_PREDICT_TOKEN is not set" in srv.log()
    finally:
        srv.kill_all()
