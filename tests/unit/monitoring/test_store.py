"""The monitor's store: outcomes that arrive before their prediction's log file are kept as
pending and matched when it is read; outcomes are never deleted, and an outcome whose prediction
``retention_rows`` removed is counted as pruned, not as pending.
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
    pending, kept, and joined once the prediction's file appears."""
    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    features = contract.feature_columns(["duration"])
    store = MonitorStore(tmp_path / "monitor.sqlite", contract, features)
    records, _ = live_records(0, 3)
    first = store.add_feedback([Outcome("early-1", 0, 1), Outcome("early-2", 0, 0)])
    assert (first.pending, first.matched) == (2, 0)
    assert first.to_dict()["pending_ids"] == [
        {"request_id": "early-1", "row": 0},
        {"request_id": "early-2", "row": 0},
    ]
    assert store.feedback_counts() == {"stored": 2, "joined": 0, "pending": 2, "pruned": 0}
    write_log(tmp_path / "log", ["early-1", "early-2", "other"], records, [0.9, 0.2, 0.5], "7")
    done = store.ingest_log(tmp_path / "log")
    assert (done.files, done.rows, done.duplicates) == (1, 3, 0)
    assert store.feedback_counts() == {"stored": 2, "joined": 2, "pending": 0, "pruned": 0}
    labelled = store.labelled(10, version="7")
    assert labelled["request_id"].tolist() == ["early-1", "early-2"]
    assert labelled["outcome"].tolist() == [1, 0]
    # A file is read once; the same rows in a second file are counted as duplicates.
    assert store.ingest_log(tmp_path / "log").files == 0
    write_log(tmp_path / "log", ["early-1"], records[:1], [0.9], "7")
    again = store.ingest_log(tmp_path / "log")
    assert (again.files, again.rows, again.duplicates) == (1, 0, 1)


def test_pending_outcomes_are_kept_and_pruned_predictions_are_not_counted_as_pending(
    tmp_path: Path,
) -> None:
    """Outcomes are never deleted: one whose prediction ``retention_rows`` later deletes is
    counted as pruned, not as pending; one that never matches stays pending, across a reopen."""
    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    features = contract.feature_columns(["duration"])
    store = MonitorStore(tmp_path / "monitor.sqlite", contract, features)
    records, _ = live_records(0, 3)
    write_log(tmp_path / "log", ["old"], records[:1], [0.4], "7", received_at=1000.0)
    store.ingest_log(tmp_path / "log")
    assert store.add_feedback([Outcome("old", 0, 1), Outcome("typo", 0, 0)]).matched == 1
    write_log(
        tmp_path / "log", ["new-1", "new-2"], records[1:], [0.6, 0.7], "7", received_at=2000.0
    )
    store.ingest_log(tmp_path / "log", retention_rows=2)  # "old" is the oldest row: deleted
    assert store.prediction_rows() == 2
    counts = {"stored": 2, "joined": 0, "pending": 1, "pruned": 1}
    assert store.feedback_counts() == counts
    assert MonitorStore(tmp_path / "monitor.sqlite", contract, features).feedback_counts() == (
        counts
    )


def test_a_store_made_before_pending_was_tracked_counts_its_unmatched_outcomes(
    tmp_path: Path,
) -> None:
    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    features = contract.feature_columns(["duration"])
    path = tmp_path / "monitor.sqlite"
    store = MonitorStore(path, contract, features)
    records, _ = live_records(0, 1)
    write_log(tmp_path / "log", ["logged"], records, [0.4], "7")
    store.ingest_log(tmp_path / "log")
    store.add_feedback([Outcome("logged", 0, 1), Outcome("early", 0, 0)])
    with store.connect() as conn:
        conn.execute("DROP TABLE feedback_pending")
    reopened = MonitorStore(path, contract, features)
    assert reopened.feedback_counts() == {"stored": 2, "joined": 1, "pending": 1, "pruned": 0}
