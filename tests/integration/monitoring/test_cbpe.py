"""The monitor's CBPE estimate on a real project: exported while the serving version is
calibrated on its test split, withheld with the reason in /status when it is not."""

from __future__ import annotations

import json
from pathlib import Path

from support.monitoring import labelled_project
from support.serve import metric_value

from plumbline.monitoring.monitor import render


def test_the_estimate_follows_the_serving_versions_calibration(tmp_path: Path) -> None:
    project, monitor, _ = labelled_project(tmp_path / "p", 300, 0)
    metrics_path = project.root / "reports/metrics.json"
    metrics = json.loads(metrics_path.read_text())
    assert "ece" in metrics  # written by the evaluate stage

    metrics_path.write_text(json.dumps({**metrics, "ece": 0.2}))
    snap = monitor.refresh()
    assert snap.estimate is not None and not snap.estimate.available
    status = snap.to_dict()["estimate"]
    assert "poorly calibrated" in status["reason"] and "0.2000" in status["reason"]
    text = render(monitor)[0].decode()
    assert 'plumbline_live_estimated_roc_auc{model_version="1"}' not in text
    assert 'plumbline_live_estimate_available{model_version="1"} 0.0' in text
    assert metric_value(text, "plumbline_model_test_ece", model_version="1") == 0.2

    metrics_path.write_text(json.dumps({**metrics, "ece": 0.01}))
    snap = monitor.refresh()
    assert snap.estimate is not None and snap.estimate.available, snap.estimate
    text = render(monitor)[0].decode()
    # write_log scored every row 0.5: the scores rank nothing, the expected AUC is 0.5.
    assert metric_value(text, "plumbline_live_estimated_roc_auc", model_version="1") == 0.5
    assert metric_value(text, "plumbline_live_estimated_rows", model_version="1") == 300
