"""Data and prediction drift: a window of live rows against the training reference profile.

Per numeric feature: PSI on the reference's quantile bins and the two-sample Kolmogorov-Smirnov
test against the reference sample. Per categorical feature: PSI on the contract categories,
Jensen-Shannon distance and a chi-squared goodness-of-fit test. The model's score gets the
numeric treatment against the training-score profile in the model card.

A feature counts as drifted only when the shift is both large (PSI above its threshold) and
unlikely to be chance (p-value below its threshold): with thousands of rows a test alone flags
differences too small to matter, and PSI alone is noisy on small windows.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

# Fractions are floored at this value so that an empty bin does not make PSI infinite.
PSI_FLOOR = 1e-4
SCORE = "__score__"


@dataclass(frozen=True)
class DriftThresholds:
    psi: float = 0.2
    p_value: float = 0.01
    min_rows: int = 200


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    rows: int
    psi: float
    test: str
    statistic: float
    p_value: float
    drifted: bool
    js_distance: float | None = None


@dataclass
class DriftReport:
    rows: int
    thresholds: dict[str, float]
    features: list[FeatureDrift] = field(default_factory=list)
    score: FeatureDrift | None = None
    enough_rows: bool = True

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_features"] = self.drifted_features
        return out


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e)."""
    e = np.clip(np.asarray(expected, dtype=float), floor, None)
    a = np.clip(np.asarray(actual, dtype=float), floor, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def bin_fractions(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Share of values in each reference bin; values outside fall in the outer bins."""
    inner = np.asarray(edges[1:-1], dtype=float)
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
    return counts / max(len(values), 1)


def numeric_drift(
    name: str, reference: dict[str, Any], live: np.ndarray, thresholds: DriftThresholds
) -> FeatureDrift:
    live = live[~np.isnan(live)]
    value = psi(np.asarray(reference["bin_fractions"]), bin_fractions(live, reference["bin_edges"]))
    with warnings.catch_warnings():  # "exact calculation unsuccessful": asymptotic is fine
        warnings.simplefilter("ignore", RuntimeWarning)
        ks = stats.ks_2samp(np.asarray(reference["sample"], dtype=float), live)
    p = float(ks.pvalue)
    return FeatureDrift(
        feature=name,
        kind="numeric",
        rows=len(live),
        psi=value,
        test="ks_2samp",
        statistic=float(ks.statistic),
        p_value=p,
        drifted=value > thresholds.psi and p < thresholds.p_value,
    )


def categorical_drift(
    name: str, reference: dict[str, Any], live: pd.Series, thresholds: DriftThresholds
) -> FeatureDrift:
    categories = list(reference["frequencies"])
    expected = np.array([reference["frequencies"][c] for c in categories], dtype=float)
    counts = live.astype(str).value_counts()
    observed = np.array([counts.get(c, 0) for c in categories], dtype=float)
    n = observed.sum()
    actual = observed / max(n, 1)
    value = psi(expected, actual)
    # Goodness of fit of the live counts to the reference shares (floored like PSI, so a
    # category never seen in training does not divide by zero).
    exp_counts = np.clip(expected, PSI_FLOOR, None)
    exp_counts = exp_counts / exp_counts.sum() * n
    chi = stats.chisquare(observed, exp_counts) if n else None
    statistic = float(chi.statistic) if chi is not None else 0.0
    p = float(chi.pvalue) if chi is not None else 1.0
    return FeatureDrift(
        feature=name,
        kind="categorical",
        rows=int(n),
        psi=value,
        test="chi_squared",
        statistic=statistic,
        p_value=p,
        drifted=value > thresholds.psi and p < thresholds.p_value,
        js_distance=float(jensenshannon(expected, actual, base=2)) if n else None,
    )


def compare(
    profile: dict[str, Any],
    live: pd.DataFrame,
    thresholds: DriftThresholds,
    score_profile: dict[str, Any] | None = None,
    live_scores: np.ndarray | None = None,
) -> DriftReport:
    """Drift of every profiled feature present in ``live`` (and of the scores, if given)."""
    report = DriftReport(
        rows=len(live), thresholds=asdict(thresholds), enough_rows=len(live) >= thresholds.min_rows
    )
    if not report.enough_rows:
        return report
    for name, reference in profile["features"].items():
        if name not in live.columns:
            continue
        if reference["kind"] == "numeric":
            values = pd.to_numeric(live[name], errors="coerce").to_numpy(dtype=float)
            report.features.append(numeric_drift(name, reference, values, thresholds))
        else:
            report.features.append(
                categorical_drift(name, reference, live[name].dropna(), thresholds)
            )
    if score_profile and live_scores is not None and len(live_scores):
        report.score = numeric_drift(
            SCORE, score_profile, np.asarray(live_scores, float), thresholds
        )
    return report


def write_report(report: DriftReport, directory: Path, title: str = "Drift report") -> Path:
    """A readable report: drift.md with a table per feature, drift.png, drift.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "drift.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    rows = sorted(report.features, key=lambda f: -f.psi)
    if report.score is not None:
        rows = [report.score, *rows]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(rows) + 1)))
    names = [("model score" if f.feature == SCORE else f.feature) for f in rows][::-1]
    values = [f.psi for f in rows][::-1]
    colors = ["tab:red" if f.drifted else "tab:blue" for f in rows][::-1]
    ax.barh(names, values, color=colors)
    ax.axvline(report.thresholds["psi"], color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="PSI (red: drifted)", title=title)
    fig.tight_layout()
    fig.savefig(directory / "drift.png", dpi=100, metadata={"Software": None})
    plt.close(fig)

    lines = [f"# {title}", ""]
    if not report.enough_rows:
        lines.append(
            f"Only {report.rows} rows; at least {report.thresholds['min_rows']:.0f} "
            "are needed for a verdict."
        )
    else:
        drifted = report.drifted_features
        lines.append(
            f"{report.rows} live rows compared with the training profile. Drifted features "
            f"(PSI > {report.thresholds['psi']} and p < {report.thresholds['p_value']}): "
            + (", ".join(f"`{d}`" for d in drifted) if drifted else "none")
            + "."
        )
        if report.score is not None:
            lines.append(
                f"Score drift: {'yes' if report.score.drifted else 'no'} "
                f"(PSI {report.score.psi:.3f})."
            )
        lines += [
            "",
            "![PSI per feature](drift.png)",
            "",
            "| feature | kind | PSI | test | statistic | p-value | drifted |",
            "|---|---|---:|---|---:|---:|---|",
        ]
        for f in rows:
            name = "model score" if f.feature == SCORE else f.feature
            lines.append(
                f"| {name} | {f.kind} | {f.psi:.3f} | {f.test} | {f.statistic:.3f} | "
                f"{f.p_value:.2e} | {'**yes**' if f.drifted else 'no'} |"
            )
    path = directory / "drift.md"
    path.write_text("\n".join(lines) + "\n")
    return path
