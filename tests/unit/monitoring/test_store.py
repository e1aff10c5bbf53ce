"""Delayed labels: outcomes posted to the monitor are joined to the server's prediction log,
unknown ids and duplicates are reported, and live metrics are exactly those of the joined rows.

The server and the monitor are the real processes on loopback ports; the traffic is real rows
of the late (2010) part of the bank file, scored by a model trained on early (2008) rows.
"""

from __future__ import annotations

from pathlib import Path

from support.monitoring import live_records, write_log
from support.paths import REPO

from plumbline.core.contract import load_contract
from plumbline.monitoring.store import MonitorStore, Outcome

ROWS = 250


def test_an_outcome_posted_before_its_prediction_is_joined_later(tmp_path: Path) -> None:
    """The log is read in finished files, so an outcome may arrive first: it is reported as
    unknown, kept, and joined once the prediction's file appears."""
    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    features = contract.feature_columns(["duration"])
    store = MonitorStore(tmp_path / "monitor.sqlite", contract, features)
    records, _ = live_records(0, 3)
    first = store.add_feedback([Outcome("early-1", 0, 1), Outcome("early-2", 0, 0)])
    assert (first.unknown, first.matched) == (2, 0)
    assert store.feedback_counts() == {"stored": 2, "joined": 0, "unmatched": 2}
    write_log(tmp_path / "log", ["early-1", "early-2", "other"], records, [0.9, 0.2, 0.5], "7")
    done = store.ingest_log(tmp_path / "log")
    assert (done.files, done.rows, done.duplicates) == (1, 3, 0)
    assert store.feedback_counts() == {"stored": 2, "joined": 2, "unmatched": 0}
    labelled = store.labelled(10, version="7")
    assert labelled["request_id"].tolist() == ["early-1", "early-2"]
    assert labelled["outcome"].tolist() == [1, 0]
    # A file is read once; the same rows in a second file are counted as duplicates.
    assert store.ingest_log(tmp_path / "log").files == 0
    write_log(tmp_path / "log", ["early-1"], records[:1], [0.9], "7")
    again = store.ingest_log(tmp_path / "log")
    assert (again.files, again.rows, again.duplicates) == (1, 0, 1)
