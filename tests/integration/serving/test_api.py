"""The prediction API as a client sees it: the real server process, real HTTP.

One server for the module, serving the local fallback artifact (its registry does not exist),
with two HTTP processes and one scoring worker, as configured by default.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from support.serve import Artifacts, Server, artifacts, metric_value, records, session_dir

from plumbline.model.artifact import load_model, positive_proba

MAX_BODY = 8 * 2**20


@pytest.fixture(scope="module")
def bank() -> Artifacts:
    return artifacts()


@pytest.fixture(scope="module")
def server(bank: Artifacts) -> Iterator[Server]:
    directory = session_dir() / "api"
    missing_store = f"sqlite:///{directory / 'no-such-store.db'}"
    with Server(
        directory,
        missing_store,
        fallback_artifact=str(bank.model),
        max_body_bytes=MAX_BODY,
        poll_interval_s=30,
        prediction_log={"rotate_rows": 500},
    ) as srv:
        srv.wait("/ready")
        yield srv


@pytest.fixture(scope="module")
def good(bank: Artifacts) -> dict[str, object]:
    return records(bank.test_frame().head(1), bank.features)[0]


def test_online_predictions_equal_batch_predictions(server: Server, bank: Artifacts) -> None:
    test = bank.test_frame()
    expected = positive_proba(load_model(bank.model), test[bank.features])
    rows = records(test, bank.features)

    # The whole test split as one request ...
    response = server.post(rows)
    assert response.status_code == 200, response.text
    batch = response.json()
    assert len(batch) == len(rows)
    got = np.array([p["probability"] for p in batch])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert [p["label"] for p in batch] == [int(p >= 0.5) for p in expected]

    # ... and row by row, concurrently, so that the server batches them dynamically.
    def one(i: int) -> float:
        r = requests.post(server.url + "/predict", json=rows[i], timeout=30)
        assert r.status_code == 200, r.text
        return float(r.json()["probability"])

    picked = list(range(0, len(rows), 3))
    with ThreadPoolExecutor(16) as pool:
        singles = list(pool.map(one, picked))
    np.testing.assert_allclose(singles, expected[picked], rtol=0, atol=1e-9)


def test_response_names_model_version_and_request_id(server: Server, good: dict) -> None:
    response = server.post(good, headers={"X-Request-ID": "client-id-42"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"probability", "label", "model_name", "model_version", "request_id"}
    assert body["request_id"] == "client-id-42" == response.headers["x-request-id"]
    assert body["model_name"] == "plumbline-serve-test"
    assert body["model_version"].startswith("local-")
    assert 0.0 <= body["probability"] <= 1.0 and body["label"] in (0, 1)
    # Without a client id the server makes one; each request gets its own.
    ids = {server.post(good).json()["request_id"] for _ in range(3)}
    assert len(ids) == 3


def _detail(response: requests.Response) -> list[dict]:
    assert response.status_code == 422, (response.status_code, response.text)
    return response.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field", "error_type"),
    [
        (lambda r: r.pop("age"), "age", "missing"),
        (lambda r: r.update(age="41"), "age", "int_type"),
        (lambda r: r.update({"euribor3m": "high"}), "euribor3m", "float_type"),
        (lambda r: r.update(age=200), "age", "less_than_equal"),
        (lambda r: r.update(campaign=0), "campaign", "greater_than_equal"),
        (lambda r: r.update(job="astronaut"), "job", "literal_error"),
        (lambda r: r.update({"nr.employed": None}), "nr.employed", "float_type"),
    ],
)
def test_bad_record_is_422_naming_the_field(
    server: Server, good: dict, change, field: str, error_type: str
) -> None:
    record = dict(good)
    change(record)
    errors = _detail(server.post(record))
    assert [(e["field"], e["type"]) for e in errors] == [(field, error_type)]
    assert errors[0]["msg"]
    # In a list, the error also names the record's position.
    errors = _detail(server.post([good, good, record]))
    assert [(e["field"], e["record"]) for e in errors] == [(field, 2)]


def test_malformed_json_and_wrong_shapes_are_422(server: Server, good: dict) -> None:
    for body in (b'{"age": 41,', b"not json", b""):
        errors = _detail(
            requests.post(
                server.url + "/predict",
                data=body,
                timeout=10,
                headers={"Content-Type": "application/json"},
            )
        )
        assert errors[0]["field"] == "body" and errors[0]["type"] == "json_invalid"
    errors = _detail(requests.post(server.url + "/predict", data=b"42", timeout=10))
    assert errors[0]["field"] == "body"
    assert _detail(server.post([]))[0]["field"] == "records"


def test_too_many_records_is_422(server: Server, good: dict) -> None:
    errors = _detail(server.post([good] * 10_001))
    assert [(e["field"], e["type"]) for e in errors] == [("records", "too_long")]
    # The maximum itself is fine.
    assert len(server.post([good] * 10_000).json()) == 10_000


def test_oversized_body_is_refused_before_parsing(server: Server) -> None:
    body = b"[" + b" " * (MAX_BODY + 10) + b"]"
    response = requests.post(server.url + "/predict", data=body, timeout=30)
    assert response.status_code == 413
    # Chunked, without a length to check up front: refused once the limit is passed.
    chunks = (b" " * 2**20 for _ in range(9))
    response = requests.post(server.url + "/predict", data=chunks, timeout=30)
    assert response.status_code == 413


def test_server_stays_up_after_bad_input(server: Server, good: dict) -> None:
    for body in (b"{", b"[1, 2, 3]", json.dumps({"age": [1]}).encode()):
        assert requests.post(server.url + "/predict", data=body, timeout=10).status_code == 422
    assert server.get("/health").status_code == 200
    assert server.get("/ready").status_code == 200
    assert server.post(good).status_code == 200
    assert (
        metric_value(server.get("/metrics").text, "plumbline_http_requests_total", status="500")
        == 0
    )


def test_probes(server: Server) -> None:
    health = server.get("/health")
    assert health.status_code == 200
    ready = server.get("/ready")
    assert ready.status_code == 200
    model = ready.json()["model"]
    assert model["source"] == "local" and model["scorer"] == "fast"


def test_openapi_documents_one_schema(server: Server) -> None:
    doc = server.get("/openapi.json").json()
    post = doc["paths"]["/predict"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    record_ref = body["anyOf"][0]["$ref"]
    assert body["anyOf"][1]["items"]["$ref"] == record_ref
    assert body["anyOf"][1]["maxItems"] == 10_000
    record = doc["components"]["schemas"][record_ref.rsplit("/", 1)[1]]
    assert {"age", "job", "emp.var.rate"} <= set(record["properties"])
    assert "duration" not in record["properties"]  # excluded from the features
    assert set(post["responses"]) >= {"200", "413", "422", "503"}
    assert server.get("/docs").status_code == 200


def test_metrics_move_with_traffic(server: Server, good: dict) -> None:
    def scrape() -> str:
        response = server.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    def settled() -> str:
        """A scrape after earlier tests' counts have all been written (HTTP processes write
        theirs every 0.25 s): two scrapes 0.3 s apart agree."""

        def counts(text: str) -> tuple[float, float]:
            return (
                metric_value(text, "plumbline_http_requests_total", route="/predict"),
                metric_value(text, "plumbline_predictions_total"),
            )

        last = scrape()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = scrape()
            if counts(now) == counts(last):
                return now
            last = now
        raise AssertionError("the counts of earlier requests never settled")

    before = settled()
    n = 40
    for _ in range(n):  # a new connection each time: both HTTP processes take some
        assert requests.post(server.url + "/predict", json=good, timeout=10).status_code == 200
    bad = dict(good, age="x")
    for _ in range(3):
        requests.post(server.url + "/predict", json=bad, timeout=10)

    def moved(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    # Processes write their counts a few times a second, each series on its own: wait until
    # every one asserted below has caught up (then check that none overshot).
    expected = {
        ("plumbline_http_requests_total", ("route", "/predict"), ("status", "200")): n,
        ("plumbline_http_requests_total", ("route", "/predict"), ("status", "422")): 3,
        ("plumbline_http_request_duration_seconds_count", ("route", "/predict")): n + 3,
        ("plumbline_validation_failures_total", ("field", "age")): 3,
        ("plumbline_prediction_score_count",): n,
        ("plumbline_predictions_total",): n,
        ("plumbline_batch_size_sum",): n,
        ("plumbline_batch_rows_sum",): n,
    }
    deadline = time.monotonic() + 10
    after = scrape()
    while any(moved(name, **dict(labels)) < count for (name, *labels), count in expected.items()):
        assert time.monotonic() < deadline, "counts never caught up"
        time.sleep(0.1)
        after = scrape()

    # Counted once each across the HTTP processes, as Prometheus will see them.
    assert moved("plumbline_http_requests_total", route="/predict", status="200") == n
    assert moved("plumbline_http_requests_total", route="/predict", status="422") == 3
    assert moved("plumbline_http_request_duration_seconds_count", route="/predict") == n + 3
    assert moved("plumbline_validation_failures_total", field="age") == 3
    assert moved("plumbline_prediction_score_count") == n
    assert moved("plumbline_predictions_total") == n
    assert moved("plumbline_batch_size_sum") == n
    assert moved("plumbline_batch_rows_sum") == n
    version = server.get("/ready").json()["model"]["model_version"]
    assert metric_value(after, "plumbline_model_info", model_version=version) == 1
    assert metric_value(after, "plumbline_model_ready") == 1
    assert metric_value(after, "plumbline_model_reloads_total", result="success") >= 1
    assert 0 <= metric_value(after, "plumbline_predicted_positive_ratio") <= 1


def test_prediction_log_records_requests(server: Server, bank: Artifacts, good: dict) -> None:
    response = server.post([good, good], headers={"X-Request-ID": "logged-request"})
    assert response.status_code == 200
    version = response.json()[0]["model_version"]
    # Files are finished every rotate_rows (500 here) rows: push this request's rows out.
    assert server.post([good] * 600).status_code == 200
    log_dir = server.directory / "predictions"
    deadline = time.monotonic() + 20
    rows = None
    while time.monotonic() < deadline:
        files = sorted(log_dir.glob("predictions-*.parquet"))
        if files:
            table = pq.read_table(files).to_pandas()
            rows = table[table["request_id"] == "logged-request"]
            if len(rows) == 2:
                break
        time.sleep(0.1)
    assert rows is not None and len(rows) == 2, "the request never reached a finished log file"
    assert rows["row"].tolist() == [0, 1]
    assert set(rows["model_version"]) == {version}
    assert rows["age"].tolist() == [good["age"]] * 2
    assert rows["job"].tolist() == [good["job"]] * 2
    assert rows["probability"].between(0, 1).all() and rows["label"].isin([0, 1]).all()
    assert str(rows["received_at"].dt.tz) == "UTC"
    assert set(bank.features) <= set(table.columns)


PLAIN_KEYS = {"probability", "label", "model_name", "model_version", "request_id"}


def test_explain_adds_additive_explanations_and_without_it_nothing_changes(
    server: Server, bank: Artifacts
) -> None:
    from plumbline.model.explain import Explainer

    test = bank.test_frame().head(200)
    rows = records(test, bank.features)
    explained = server.session.post(
        server.url + "/predict?explain=3", json=rows, timeout=30, headers={"X-Request-ID": "e3"}
    )
    assert explained.status_code == 200, explained.text
    batch = explained.json()
    reference = Explainer(load_model(bank.model), bank.features).explain_frame(test)
    for i, answer in enumerate(batch):
        e = answer["explanation"]
        assert e["space"] == "log_odds" and len(e["contributions"]) == 3
        total = e["base"] + sum(c["contribution"] for c in e["contributions"]) + e["other"]
        p = answer["probability"]
        assert abs(total - np.log(p / (1 - p))) < 1e-6
        assert abs(total - reference.log_odds[i]) < 1e-6  # the batch explainer's numbers
        top = np.argsort(-np.abs(reference.contributions[i]), kind="stable")[:3]
        assert [c["feature"] for c in e["contributions"]] == [bank.features[j] for j in top]
        assert all(c["value"] == rows[i][c["feature"]] for c in e["contributions"])
    # Without ?explain the answer is what it always was: same keys, same bytes.
    plain = server.post(rows, headers={"X-Request-ID": "e3"})
    assert plain.status_code == 200
    assert all(set(a) == PLAIN_KEYS for a in plain.json())
    assert plain.content == server.post(rows, headers={"X-Request-ID": "e3"}).content
    assert [a["probability"] for a in plain.json()] == [a["probability"] for a in batch]
    one = server.session.post(server.url + "/predict?explain=1", json=rows[0], timeout=30)
    assert one.status_code == 200 and len(one.json()["explanation"]["contributions"]) == 1


@pytest.mark.parametrize("value", ["0", "-1", "abc", "20", "1.5", ""])
def test_a_bad_explain_value_is_422(server: Server, good: dict, value: str) -> None:
    response = server.session.post(server.url + f"/predict?explain={value}", json=good, timeout=30)
    detail = _detail(response)
    assert [d["field"] for d in detail] == ["explain"]
    assert "from 1 to 19" in detail[0]["msg"]


def test_prediction_log_stores_explanations_when_asked(server: Server, good: dict) -> None:
    asked = server.session.post(
        server.url + "/predict?explain=2",
        json=[good, good],
        timeout=30,
        headers={"X-Request-ID": "logged-explained"},
    )
    assert asked.status_code == 200
    assert server.post(good, headers={"X-Request-ID": "logged-plain"}).status_code == 200
    assert server.post([good] * 600).status_code == 200  # finish the log file
    log_dir = server.directory / "predictions"
    deadline = time.monotonic() + 20
    table = None
    while time.monotonic() < deadline:
        files = sorted(log_dir.glob("predictions-*.parquet"))
        if files:
            table = pq.read_table(files).to_pandas()
            ids = set(table["request_id"])
            if {"logged-explained", "logged-plain"} <= ids:
                break
        time.sleep(0.1)
    assert table is not None
    explained = table[table["request_id"] == "logged-explained"]
    assert len(explained) == 2
    for text, answer in zip(explained["explanation"], asked.json(), strict=True):
        assert json.loads(text) == answer["explanation"]
    assert table[table["request_id"] == "logged-plain"]["explanation"].isna().all()
