"""The on-demand monitoring report: drift (markdown + PNG) plus live performance from labels.

``plumbline drift-report`` (or ``POST /report`` on the monitor) refreshes the monitor's state
and writes, into ``monitor.report_dir``:

* ``drift.md`` / ``drift.png`` / ``drift.json``: :func:`plumbline.monitoring.drift.write_report`
  for the newest window against the serving version's training profile, followed by
* a live-performance table per model version (newest labelled rows of each version: rows,
  ROC AUC, PR AUC, Brier score, observed and predicted positive rate), and
* ``live.png``: ROC AUC, observed positive rate and mean score over consecutive blocks of
  labelled rows in time order, one colour per model version, so a model swap shows as a
  change of colour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plumbline.monitoring.drift import write_report
from plumbline.monitoring.monitor import Monitor, Snapshot, live_performance

LIVE_PLOT = "live.png"


@dataclass
class Report:
    path: Path
    snapshot: Snapshot
    timeline: pd.DataFrame


def timeline(labelled: pd.DataFrame, block_rows: int) -> pd.DataFrame:
    """Live metrics over consecutive blocks of ``block_rows`` labelled rows (oldest first);
    a block never mixes model versions (a version's last block may be shorter, down to half)."""
    rows: list[dict[str, Any]] = []
    if labelled.empty:
        return pd.DataFrame(rows)
    version = labelled["model_version"].astype(str)
    segment = (version != version.shift()).cumsum()
    for _, part in labelled.groupby(segment, sort=False):
        name = str(part["model_version"].iloc[0])
        starts = list(range(0, len(part), block_rows))
        for i, start in enumerate(starts):
            block = part.iloc[start : start + block_rows]
            if len(block) < max(10, block_rows // 2) and i > 0:
                continue
            perf = live_performance(block, name)
            if perf is None:
                continue
            rows.append(
                {
                    "model_version": name,
                    "rows": perf.rows,
                    "end_at": perf.last_at,
                    "roc_auc": perf.roc_auc,
                    "pr_auc": perf.pr_auc,
                    "positive_rate": perf.positive_rate,
                    "mean_score": perf.mean_score,
                }
            )
    return pd.DataFrame(rows)


def plot_timeline(frame: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    if frame.empty:
        top.text(0.5, 0.5, "no labelled rows yet", ha="center", va="center")
    else:
        start = frame["end_at"].min()
        minutes = (frame["end_at"] - start) / 60.0
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (name, part) in enumerate(frame.groupby("model_version", sort=False)):
            color = colors[i % len(colors)]
            x = minutes.loc[part.index]
            top.plot(x, part["roc_auc"], "o-", color=color, label=f"version {name}")
            bottom.plot(x, part["positive_rate"], "o-", color=color)
            bottom.plot(x, part["mean_score"], "x--", color=color, alpha=0.7)
        top.legend(loc="lower left", fontsize=8)
        bottom.set_xlabel(
            f"minutes since the first labelled block ({frame['rows'].max():.0f} rows per block)"
        )
    top.set(ylabel="live ROC AUC", title=title)
    top.grid(alpha=0.3)
    bottom.set(ylabel="positive rate (o) / mean score (x)")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _fmt(value: Any, digits: int = 3) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and np.isnan(value))
        else f"{value:.{digits}f}"
    )


def write(
    monitor: Monitor,
    directory: Path | None = None,
    block_rows: int | None = None,
    max_labelled: int = 200_000,
) -> Report:
    directory = directory or monitor.report_dir
    directory.mkdir(parents=True, exist_ok=True)
    snap = monitor.refresh()
    version = snap.serving_version or "none"
    title = (
        f"Drift: newest {snap.drift.rows if snap.drift else 0} rows vs the training "
        f"profile of model version {version}"
    )
    if snap.drift is not None:
        path = write_report(snap.drift, directory, title)
        text = path.read_text()
    else:
        path = directory / "drift.md"
        text = (
            f"# {title}\n\nNo logged predictions yet"
            + (f" ({snap.error})" if snap.error else "")
            + ".\n"
        )
    labelled = monitor.store.labelled(max_labelled)
    block = block_rows or max(50, min(monitor.cfg.label_window_rows, len(labelled) // 20 or 1))
    frame = timeline(labelled, block)
    plot_timeline(
        frame, directory / LIVE_PLOT, "Live performance from delayed labels, by model version"
    )
    lines = [
        "",
        "## Live performance (delayed labels)",
        "",
        f"Newest labelled rows of each version, at most {monitor.cfg.label_window_rows} "
        f"(`monitor.label_window_rows`); serving now: version {version}. Feedback: "
        f"{snap.feedback.get('stored', 0)} outcomes stored, "
        f"{snap.feedback.get('pending', 0)} pending (their predictions not logged yet).",
        "",
        "| model version | logged rows | labelled rows | ROC AUC | PR AUC | Brier | "
        "positive rate | predicted positive rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in snap.versions:
        live = entry.get("live") or {}
        lines.append(
            f"| {entry['model_version']} | {entry['rows']} | {entry['labelled']} | "
            f"{_fmt(live.get('roc_auc'))} | {_fmt(live.get('pr_auc'))} | "
            f"{_fmt(live.get('brier'))} | {_fmt(live.get('positive_rate'))} | "
            f"{_fmt(live.get('predicted_positive_rate'))} |"
        )
    if snap.test_metrics:
        lines += [
            "",
            f"Version {version} on its own test split: ROC AUC "
            f"{_fmt(snap.test_metrics.get('roc_auc'))}, PR AUC "
            f"{_fmt(snap.test_metrics.get('pr_auc'))}.",
        ]
    lines += ["", f"![Live ROC AUC and positive rate over time]({LIVE_PLOT})", ""]
    path.write_text(text.rstrip("\n") + "\n" + "\n".join(lines))
    (directory / "live.json").write_text(
        json.dumps(
            {"snapshot": snap.to_dict(), "timeline": frame.to_dict(orient="records")},
            indent=2,
            default=str,
        )
        + "\n"
    )
    return Report(path=path, snapshot=snap, timeline=frame)
