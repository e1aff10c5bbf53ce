"""The report of a ``make demo`` run: ``loop.md`` and its PNGs, from the run's ``loop.json``.

A pure function of the record (:func:`write`), so a recorded run renders the same way again
(``plumbline demo --render reports/loop/loop.json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PLOTS = {
    "live_roc_auc.png": "Live ROC AUC (delayed outcomes) by version",
    "positive_rate.png": "Observed and predicted positive rate by version",
    "estimated_vs_realised.png": "Estimated (CBPE) vs realised live ROC AUC by version",
}


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def timeline(record: dict[str, Any]) -> list[tuple[float, str]]:
    """(seconds after the replay started, event), in time order."""
    events: list[tuple[float, str]] = []
    alerts = record.get("alerts") or {}
    drift = [
        (a["first_firing_s"], name)
        for name, a in alerts.items()
        if name in ("PlumblineDataDrift", "PlumblinePredictionDrift")
    ]
    if drift:
        t, name = min(drift)
        events.append((t, f"first drift alert: {name} fires"))
    for name, a in sorted(alerts.items(), key=lambda kv: kv[1]["first_firing_s"]):
        series = ", ".join(s for s in a.get("series", []) if s)
        events.append(
            (a["first_firing_s"], f"{name} first fires" + (f" ({series})" if series else ""))
        )
    for r in record.get("retrains") or []:
        events.append(
            (
                r["started_s"],
                f"retrain {r['id']} starts ({r['trigger']}); window "
                f"{r['live_rows']} live + {r['history_rows']} history rows",
            )
        )
        if r["status"] == "running":
            events.append((r["finished_s"], f"retrain {r['id']} still running when the demo ended"))
        else:
            events.append((r["finished_s"], f"retrain {r['id']} ends: {r['status']}"))
        if r["status"] == "promoted":
            events.append(
                (
                    r["finished_s"],
                    f"promotion: champion {r['champion_before']} -> {r['champion_after']}",
                )
            )
    served = record.get("first_served_s") or {}
    first = min(served.values()) if served else None
    for version, t in sorted(served.items(), key=lambda kv: kv[1]):
        if t != first:
            events.append((t, f"hot reload: version {version} answers its first request"))
    replay = record.get("replay") or {}
    if "replay_s" in record:
        events.append(
            (
                record["replay_s"],
                f"replay ends: {replay.get('ok_rows', '?')} rows answered, "
                f"{replay.get('failed_requests', replay.get('failed', '?'))} failed requests",
            )
        )
    return sorted(events, key=lambda e: e[0])


def estimate_errors(record: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    """Per version: mean and largest |estimated - realised| live ROC AUC over the samples
    where both were exported (the estimate looks at newer rows than the labelled ones)."""
    est = (record.get("estimated") or {}).get("roc_auc") or {}
    real = (record.get("estimated") or {}).get("realised_roc_auc") or {}
    out: dict[str, dict[str, float | int]] = {}
    for version, points in est.items():
        realised = {t: v for t, v in real.get(version, [])}
        gaps = [abs(v - realised[t]) for t, v in points if t in realised]
        if gaps:
            out[version] = {"samples": len(gaps), "mean": sum(gaps) / len(gaps), "max": max(gaps)}
    return out


def _plot(
    path: Path,
    title: str,
    ylabel: str,
    lines: list[tuple[str, list[list[float]]]],
    swaps: list[float],
) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.subplots()
    for label, points in lines:
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label, linewidth=1.5)
    for t in swaps:
        ax.axvline(t, color="grey", linestyle="--", linewidth=1)
    ax.set(title=title, xlabel="seconds after the replay started", ylabel=ylabel)
    if any(points for _, points in lines):
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})


def write(record: dict[str, Any], out: Path) -> list[Path]:
    """loop.md and the PNGs in ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    served = record.get("first_served_s") or {}
    first = min(served.values()) if served else None
    swaps = [t for t in served.values() if t != first]
    series = record.get("series") or {}
    estimated = record.get("estimated") or {}
    written = []
    roc = series.get("roc_auc") or {}
    _plot(
        out / "live_roc_auc.png",
        PLOTS["live_roc_auc.png"],
        "ROC AUC",
        [(f"version {v}", p) for v, p in sorted(roc.items())],
        swaps,
    )
    pos = series.get("positive_rate") or {}
    pred = series.get("predicted_positive_rate") or {}
    _plot(
        out / "positive_rate.png",
        PLOTS["positive_rate.png"],
        "share",
        [(f"observed, version {v}", p) for v, p in sorted(pos.items())]
        + [(f"predicted, version {v}", p) for v, p in sorted(pred.items())],
        swaps,
    )
    est = estimated.get("roc_auc") or {}
    _plot(
        out / "estimated_vs_realised.png",
        PLOTS["estimated_vs_realised.png"],
        "ROC AUC",
        [(f"estimated, version {v}", p) for v, p in sorted(est.items())]
        + [(f"realised, version {v}", p) for v, p in sorted(roc.items())],
        swaps,
    )
    written += [out / name for name in PLOTS]

    lines = ["# The closed loop on the shipped defaults (`make demo`)", ""]
    replay = record.get("replay") or {}
    lines += [
        f"Replay of the last 20 % of the file: {replay.get('ok_rows', '?')} rows answered, "
        f"outcomes posted after a delay; the run took {_f(record.get('total_s'), 0)} s "
        f"({_f(record.get('setup_s'), 0)} s set-up, {_f(record.get('replay_s'), 0)} s replay).",
        "",
        "## Settings changed from the shipped configuration (timing, ports, paths only)",
        "",
        "| setting | shipped | demo |",
        "|---|---|---|",
    ]
    for key, o in (record.get("overrides") or {}).items():
        lines.append(
            f"| `{key}` | {o['shipped'] if o['shipped'] is not None else '-'} | {o['demo']} |"
        )
    lines += [
        "",
        "## Timeline (seconds after the replay started)",
        "",
        "| s | event |",
        "|---:|---|",
    ]
    lines += [f"| {t:.0f} | {text} |" for t, text in timeline(record)]
    gate = record.get("retrain_gate") or {}
    if gate:
        lines += [
            "",
            "## The retrain gate",
            "",
            f"{'passed' if gate.get('passed') else 'failed'}: {gate.get('note', '')}",
            "",
        ]
        comparison = gate.get("comparison") or {}
        if comparison:
            pct = round(comparison["confidence"] * 100)
            lines += [
                f"| on the window's newest {comparison['rows']} rows | challenger | "
                f"champion | improvement | {pct}% CI |",
                "|---|---:|---:|---:|---|",
            ]
            for m, v in comparison["metrics"].items():
                lines.append(
                    f"| {m} | {_f(v['challenger'])} | {_f(v['champion'])} | "
                    f"{v['improvement']:+.3f} | {v['interval'][0]:+.3f} to "
                    f"{v['interval'][1]:+.3f} |"
                )
        for reason in gate.get("reasons") or []:
            lines.append(f"- {reason}")
    ba = record.get("before_after") or {}
    if ba:
        lines += [
            "",
            "## Live metrics per version",
            "",
            "On the rows each version served:",
            "",
            "| version | rows | positive rate | ROC AUC | PR AUC | Brier |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for v, m in sorted(ba.get("served", {}).items()):
            lines.append(
                f"| {v} | {m['rows']} | {_f(m['positive_rate'])} | {_f(m['roc_auc'])} "
                f"| {_f(m['pr_auc'])} | {_f(m['brier'])} |"
            )
        lines += [
            "",
            "Both versions on the same post-swap rows (the old one re-scored from the "
            "logged inputs):",
            "",
            "| version | rows | ROC AUC | PR AUC | Brier | estimated ROC AUC (CBPE) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for v, m in sorted(ba.get("same_rows_after_swap", {}).items()):
            lines.append(
                f"| {v} | {m['rows']} | {_f(m['roc_auc'])} | {_f(m['pr_auc'])} | "
                f"{_f(m['brier'])} | {_f(m.get('estimated_roc_auc'))} |"
            )
    else:
        lines += ["", "No retrain was promoted, so there is no post-swap comparison."]
    lines += ["", "## Estimated vs realised live ROC AUC", ""]
    errors = estimate_errors(record)
    for v, e in sorted(errors.items()):
        lines.append(
            f"- version {v}: |estimated - realised| {_f(e['mean'])} on average, "
            f"{_f(e['max'])} at most, over {e['samples']} samples"
        )
    for v, why in sorted((estimated.get("withheld") or {}).items()):
        lines.append(f"- version {v}: no estimate exported: {why}")
    for v, m in sorted(ba.get("same_rows_after_swap", {}).items()):
        if m.get("estimated_roc_auc") is not None:
            lines.append(
                f"- version {v} on the same post-swap rows: CBPE {_f(m['estimated_roc_auc'])}"
                f" vs realised {_f(m['roc_auc'])} (error "
                f"{m['estimated_roc_auc'] - m['roc_auc']:+.3f})"
            )
    lines += [""]
    for name, title in PLOTS.items():
        lines += [f"![{title}]({name})", ""]
    (out / "loop.md").write_text("\n".join(lines))
    return [out / "loop.md", *written]
