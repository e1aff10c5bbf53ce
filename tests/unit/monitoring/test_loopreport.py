"""The `make demo` report writer (plumbline.monitoring.loopreport) on a recorded run's
loop.json (tests/unit/monitoring/data/loop_recorded.json: the `make demo` run quoted in
docs/monitoring.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plumbline.monitoring.loopreport import PLOTS, estimate_errors, timeline, write

RECORDED = Path(__file__).parent / "data" / "loop_recorded.json"


@pytest.fixture()
def record() -> dict[str, Any]:
    return json.loads(RECORDED.read_text())  # type: ignore[no-any-return]


def test_the_recorded_run_has_the_documented_fields(record: dict[str, Any]) -> None:
    assert {"overrides", "retrains", "alerts", "estimated"} <= set(record)
    assert all("status" in r for r in record["retrains"])
    assert all("first_firing_s" in a for a in record["alerts"].values())
    for version, m in record["before_after"]["same_rows_after_swap"].items():
        assert {"rows", "roc_auc", "pr_auc", "brier"} <= set(m), version
    assert not any(k.startswith(("gate", "retrain.gate", "retrain.comparison")) for k in record)


def test_the_timeline_orders_alerts_retrains_promotion_and_reload(record: dict[str, Any]) -> None:
    events = timeline(record)
    times = [t for t, _ in events]
    assert times == sorted(times)
    texts = [e for _, e in events]
    first_drift = min(
        a["first_firing_s"]
        for name, a in record["alerts"].items()
        if name in ("PlumblineDataDrift", "PlumblinePredictionDrift")
    )
    assert events[0] == (first_drift, events[0][1]) and "first drift alert" in events[0][1]
    for r in record["retrains"]:
        assert (
            r["started_s"],
            next(e for e in texts if e.startswith(f"retrain {r['id']} starts")),
        ) in events
        end = (
            f"retrain {r['id']} still running when the demo ended"
            if r["status"] == "running"
            else f"retrain {r['id']} ends: {r['status']}"
        )
        assert (r["finished_s"], end) in events
    promoted = [r for r in record["retrains"] if r["status"] == "promoted"]
    assert promoted, "the recorded run promoted a retrain"
    swap = promoted[0]
    assert (
        swap["finished_s"],
        f"promotion: champion {swap['champion_before']} -> {swap['champion_after']}",
    ) in events
    reload_at = record["first_served_s"][swap["version"]]
    assert (reload_at, f"hot reload: version {swap['version']} answers its first request") in events
    # The server picked the new champion up while the retrain was still recording its lineage.
    assert swap["started_s"] < reload_at <= swap["finished_s"] + 60


def test_the_report_states_the_figures_of_the_record(
    record: dict[str, Any], tmp_path: Path
) -> None:
    written = write(record, tmp_path)
    assert [p.name for p in written] == ["loop.md", *PLOTS]
    for name in PLOTS:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    md = (tmp_path / "loop.md").read_text()
    for key, o in record["overrides"].items():
        assert f"| `{key}` |" in md and str(o["demo"]) in md
    for version, m in record["before_after"]["same_rows_after_swap"].items():
        assert (
            f"| {version} | {m['rows']} | {m['roc_auc']:.3f} | {m['pr_auc']:.3f} | "
            f"{m['brier']:.3f} |"
        ) in md
    gate = record["retrain_gate"]
    assert gate["note"] in md
    for reason in (record["estimated"].get("withheld") or {}).values():
        assert reason in md


def test_estimate_errors_compare_the_samples_both_series_have() -> None:
    record = {
        "estimated": {
            "roc_auc": {"2": [[10.0, 0.70], [15.0, 0.72], [20.0, 0.69]]},
            "realised_roc_auc": {"2": [[15.0, 0.70], [20.0, 0.73]], "1": [[5.0, 0.6]]},
        }
    }
    errors = estimate_errors(record)
    assert set(errors) == {"2"}
    assert errors["2"]["samples"] == 2
    assert errors["2"]["mean"] == pytest.approx((0.02 + 0.04) / 2)
    assert errors["2"]["max"] == pytest.approx(0.04)


def test_plumbline_demo_render_rewrites_the_report_of_a_recorded_run(tmp_path: Path) -> None:
    from plumbline.cli.main import main

    recorded = tmp_path / "loop.json"
    recorded.write_text(RECORDED.read_text())
    assert main(["demo", "--render", str(recorded)]) == 0
    assert (tmp_path / "loop.md").is_file()
    assert {f"{name}" for name in PLOTS} <= {p.name for p in tmp_path.iterdir()}
    assert main(["demo", "--render", str(tmp_path / "missing.json")]) == 1
