"""``plumbline replay``: the later, time-ordered part of the data as live traffic, then its labels.

Rows are taken in time order from ``--start`` (a fraction of the file; default: where the
training split ends, ``featurize.train_fraction``) and sent to the server's ``POST /predict``
at ``--rate`` rows per second (single records, or lists of ``--batch`` records), each request
with its own ``X-Request-ID``. ``--label-delay`` seconds after a row was answered its true
outcome is posted to the monitor's ``POST /feedback``, which needs an operator's bearer token
(``plumbline replay`` passes ``PLUMBLINE_TOKEN``, or the deprecated ``monitor.token_env``
one). The summary counts answers by status and
model version, and what the monitor said about the outcomes (matched / pending / duplicate).
"""

from __future__ import annotations

import heapq
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from plumbline.core.contract import Contract

FEEDBACK_CHUNK = 500


@dataclass
class ReplaySummary:
    rows: int = 0
    requests: int = 0
    ok_rows: int = 0
    failed_requests: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    version_order: list[str] = field(default_factory=list)
    feedback_posted: int = 0
    feedback_failed: int = 0
    feedback: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rows_per_second: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [
            f"sent {self.rows} rows in {self.requests} requests in {self.seconds:.1f}s "
            f"({self.rows_per_second:.1f} rows/s); {self.ok_rows} rows answered, "
            f"{self.failed_requests} requests failed"
            + (f" {self.failures}" if self.failures else "")
        ]
        for version in self.version_order:
            out.append(f"  model version {version}: {self.versions[version]} rows")
        fb = self.feedback
        out.append(
            f"outcomes posted: {self.feedback_posted} (matched {fb.get('matched', 0)}, "
            f"pending {fb.get('pending', 0)}, duplicates {fb.get('duplicates', 0)}, "
            f"failed posts {self.feedback_failed})"
        )
        return out


def load_rows(
    path: Path,
    sep: str,
    encoding: str,
    contract: Contract,
    features: list[str],
    start: float,
    rows: int | None,
) -> tuple[list[dict[str, Any]], list[int], list[int]]:
    """(records, outcomes, source row numbers) of the later part of a CSV, in time order."""
    frame = pd.read_csv(path, sep=sep, encoding=encoding, dtype=str, keep_default_na=False)
    frame["__source_row__"] = range(len(frame))
    if contract.time_column:
        frame = frame.sort_values([contract.time_column, "__source_row__"], kind="stable")
    first = int(len(frame) * start)
    part = frame.iloc[first : first + rows if rows else None]
    outcomes = contract.encode_target(part[contract.target.column]).tolist()
    records: list[dict[str, Any]] = []
    nulls = set(contract.null_tokens)
    for raw in part[features].to_dict(orient="records"):
        record: dict[str, Any] = {}
        for name, value in raw.items():
            kind = contract.columns[name].type
            if value in nulls:
                record[name] = None
            elif kind == "integer":
                record[name] = int(value)
            elif kind == "float":
                record[name] = float(value)
            else:
                record[name] = value
        records.append(record)
    return records, outcomes, part["__source_row__"].tolist()


class Replay:
    def __init__(
        self,
        api: str,
        monitor: str | None,
        rate: float,
        label_delay: float,
        concurrency: int = 8,
        batch: int = 1,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.api = api.rstrip("/")
        self.monitor = monitor.rstrip("/") if monitor else None
        self.rate = rate
        self.label_delay = label_delay
        self.concurrency = concurrency
        self.batch = batch
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.summary = ReplaySummary()
        self._lock = threading.Lock()
        self._due: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = 0
        self._sending_done = threading.Event()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _send(self, request_id: str, records: list[dict[str, Any]], outcomes: list[int]) -> None:
        body: Any = records[0] if self.batch == 1 else records
        try:
            response = self._session().post(
                self.api + "/predict",
                json=body,
                headers={"X-Request-ID": request_id},
                timeout=self.timeout,
            )
            status = str(response.status_code)
            answer = response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError) as err:
            status, answer = type(err).__name__, None
        with self._lock:
            self.summary.requests += 1
            if answer is None:
                self.summary.failed_requests += 1
                self.summary.failures[status] = self.summary.failures.get(status, 0) + 1
                return
            answers = answer if isinstance(answer, list) else [answer]
            self.summary.ok_rows += len(answers)
            for a in answers:
                version = str(a["model_version"])
                if version not in self.summary.versions:
                    self.summary.version_order.append(version)
                self.summary.versions[version] = self.summary.versions.get(version, 0) + 1
            due = time.monotonic() + self.label_delay
            for row, (a, outcome) in enumerate(zip(answers, outcomes, strict=True)):
                self._seq += 1
                heapq.heappush(
                    self._due,
                    (
                        due,
                        self._seq,
                        {"request_id": a["request_id"], "row": row, "outcome": outcome},
                    ),
                )

    def _post_feedback(self, items: list[dict[str, Any]]) -> None:
        assert self.monitor is not None
        for attempt in range(3):
            try:
                response = requests.post(
                    self.monitor + "/feedback",
                    json=items,
                    headers=self.headers,
                    timeout=self.timeout,
                )
                if response.status_code == 200:
                    counts = response.json()
                    with self._lock:
                        self.summary.feedback_posted += len(items)
                        for key in ("matched", "pending", "duplicates", "conflicts"):
                            self.summary.feedback[key] = self.summary.feedback.get(key, 0) + int(
                                counts.get(key, 0)
                            )
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5 * (attempt + 1))
        with self._lock:
            self.summary.feedback_failed += len(items)

    def _feedback_loop(self) -> None:
        while True:
            now = time.monotonic()
            ready: list[dict[str, Any]] = []
            with self._lock:
                while self._due and self._due[0][0] <= now and len(ready) < FEEDBACK_CHUNK:
                    ready.append(heapq.heappop(self._due)[2])
                empty = not self._due
            if ready:
                self._post_feedback(ready)
                continue
            if empty and self._sending_done.is_set():
                return
            time.sleep(0.1)

    def run(
        self, records: list[dict[str, Any]], outcomes: list[int], id_prefix: str
    ) -> ReplaySummary:
        started = time.monotonic()
        feeder = None
        if self.monitor:
            feeder = threading.Thread(
                target=self._feedback_loop, name="replay-feedback", daemon=True
            )
            feeder.start()
        slots = threading.BoundedSemaphore(self.concurrency * 2)
        interval = self.batch / self.rate
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="replay") as pool:
            for n, first in enumerate(range(0, len(records), self.batch)):
                wait = started + n * interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                slots.acquire()
                chunk = records[first : first + self.batch]
                future = pool.submit(
                    self._send, f"{id_prefix}-{first}", chunk, outcomes[first : first + self.batch]
                )
                future.add_done_callback(lambda _: slots.release())
                self.summary.rows += len(chunk)
        sent_seconds = time.monotonic() - started
        self._sending_done.set()
        if feeder is not None:
            feeder.join()
        self.summary.seconds = time.monotonic() - started
        self.summary.rows_per_second = self.summary.rows / max(sent_seconds, 1e-9)
        return self.summary
