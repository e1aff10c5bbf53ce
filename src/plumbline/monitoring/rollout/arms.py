"""Per-arm live performance of a rollout, the shadow divergence, and the statistical verdict.

The rows come from the monitor's store (the prediction log joined with ``POST /feedback``).
The rollout judged is the newest one in the log: its mode and its two versions are those of
the newest row logged under shadow or canary.

* **shadow**: each row carries both scores (``probability`` of the champion that answered,
  ``shadow_probability`` of the challenger), so the comparison is paired
  (:func:`plumbline.model.stats.compare` with one resample for both) and the divergence of the two
  scores is measured on every shadow row, labelled or not.
* **canary**: the arms answered different rows; the comparison is unpaired.

Verdicts need ``serve.rollout.decide.min_labelled_rows`` labelled rows per arm; below that the
figures are shown and the verdict is ``no difference yet``. The margin applies to the
deciding metric (``decide.metric``); the others are judged with a margin of 0. Intervals have
the confidence ``1 - decide.alpha / decide.max_looks`` (Bonferroni over the planned looks);
``look`` is the planned look the labelled rows have reached (0 at ``min_labelled_rows``, then
one per doubling); the monitor acts on a verdict only at the first refresh of each look
(:mod:`plumbline.monitoring.rollout.decide`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from plumbline.model.stats import METRICS, UNDECIDED, Comparison, compare_many, metric
from plumbline.monitoring.store import MonitorStore
from plumbline.serving.settings import RolloutDecideConfig

ROLLOUT_METRICS: dict[str, str] = {
    "plumbline_rollout_live_roc_auc": "ROC AUC of each arm on the rollout's labelled rows",
    "plumbline_rollout_live_pr_auc": "PR AUC of each arm on the rollout's labelled rows",
    "plumbline_rollout_live_log_loss": "Log loss of each arm on the rollout's labelled rows",
    "plumbline_rollout_live_brier": "Brier score of each arm on the rollout's labelled rows",
    "plumbline_rollout_live_labelled_rows": "Labelled rows of each arm in the rollout",
    "plumbline_rollout_shadow_divergence": "Shadow mode: mean absolute difference of the two "
    "models' scores on the same rows",
    "plumbline_rollout_shadow_label_disagreement": "Shadow mode: share of rows whose label at "
    "serve.threshold differs between the models",
    "plumbline_rollout_shadow_rows": "Shadow rows the divergence is measured on",
    "plumbline_rollout_difference": "Challenger minus champion per metric (point estimate)",
    "plumbline_rollout_difference_low": "Lower end of the difference's interval "
    "(confidence 1 - decide.alpha / decide.max_looks)",
    "plumbline_rollout_difference_high": "Upper end of the difference's interval",
    "plumbline_rollout_verdict": "Per metric: 1 challenger better, -1 worse, 0 no difference yet",
    "plumbline_rollout_decisions_total": "Rollout decisions taken by the monitor, by action "
    "(promote, end)",
}

_COLUMNS = (
    "p.model_version, p.arm, p.rollout, p.shadow_version, p.shadow_probability, "
    "p.probability, p.received_at"
)


@dataclass
class ArmsReport:
    mode: str
    champion_version: str
    challenger_version: str | None
    labelled: dict[str, int] = field(default_factory=dict)
    live: dict[str, dict[str, float | None]] = field(default_factory=dict)
    divergence: dict[str, float] | None = None
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    metric: str = "roc_auc"
    min_labelled_rows: int = 0
    look: int | None = None  # the planned look reached (index into look_rows), None: none yet
    look_rows: list[int] = field(default_factory=list)
    confidence: float = 0.95

    @property
    def verdict(self) -> str:
        chosen = self.comparisons.get(self.metric)
        return chosen.verdict if chosen is not None else UNDECIDED

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "labelled": self.labelled,
            "live": self.live,
            "divergence": self.divergence,
            "comparisons": {k: v.to_dict() for k, v in self.comparisons.items()},
            "metric": self.metric,
            "min_labelled_rows": self.min_labelled_rows,
            "look": self.look,
            "look_rows": self.look_rows,
            "confidence": self.confidence,
            "verdict": self.verdict,
        }

    def lines(self) -> list[str]:
        """The verdict as a table (what ``plumbline rollout status`` prints)."""
        out = [
            f"rollout: {self.mode}; champion {self.champion_version}, challenger "
            f"{self.challenger_version or 'none'}; labelled rows: "
            + ", ".join(f"{arm} {n}" for arm, n in self.labelled.items())
        ]
        if self.divergence:
            d = self.divergence
            out.append(
                f"shadow divergence over {int(d['rows'])} rows: mean |score difference| "
                f"{d['mean_abs']:.4f}, labels differ on {d['label_disagreement']:.2%}"
            )
        if not self.comparisons:
            out.append("no verdict yet: too few labelled rows with both outcomes")
            return out
        kind = "paired bootstrap" if self.mode == "shadow" else "unpaired bootstrap"
        level = f"{self.confidence * 100:.4g} %"
        out.append(
            f"{'metric':<9} {'champion':>9} {'challenger':>10} {'difference':>11} "
            f"{level + ' interval (' + kind + ')':>40} {'rows':>11}  verdict"
        )
        for name in METRICS:
            c = self.comparisons.get(name)
            if c is None:
                continue
            rows = f"{c.champion_rows}" if c.paired else f"{c.champion_rows}+{c.challenger_rows}"
            interval = f"[{c.low:+.4f}, {c.high:+.4f}]" if math.isfinite(c.low) else "n/a"
            marker = " *" if name == self.metric else ""
            out.append(
                f"{name:<9} {c.champion:>9.4f} {c.challenger:>10.4f} {c.difference:>+11.4f} "
                f"{interval:>40} {rows:>11}  {c.verdict}{marker}"
            )
        out.append(
            f"* decides (serve.rollout.decide.metric); verdicts need {self.min_labelled_rows} "
            "labelled rows per arm"
        )
        if self.look_rows:
            reached = "none yet" if self.look is None else f"{self.look + 1}"
            out.append(
                f"planned looks at {', '.join(map(str, self.look_rows))} labelled rows per arm "
                f"(reached: {reached} of {len(self.look_rows)}); the monitor acts only at a "
                "look's first refresh"
            )
        return out


def rollout_rows(store: MonitorStore, rows: int, labelled: bool) -> pd.DataFrame:
    """The newest ``rows`` rows logged under a rollout (with ``outcome`` when labelled)."""
    if labelled:
        sql = (
            f"SELECT {_COLUMNS}, f.outcome AS outcome FROM predictions p JOIN feedback f "
            "USING (request_id, row) WHERE p.rollout IN ('shadow', 'canary') "
            "ORDER BY p.received_at DESC, p.rowid DESC LIMIT ?"
        )
    else:
        sql = (
            f"SELECT {_COLUMNS} FROM predictions p WHERE p.rollout IN ('shadow', 'canary') "
            "ORDER BY p.received_at DESC, p.rowid DESC LIMIT ?"
        )
    with store.connect() as conn:
        frame = pd.read_sql_query(sql, conn, params=[rows])
    return frame.iloc[::-1].reset_index(drop=True)


def rollout_key(store: MonitorStore) -> tuple[Any, ...]:
    """Changes whenever a rollout row or one of its outcomes arrives (cheap, indexed)."""
    with store.connect() as conn:
        logged = conn.execute(
            "SELECT COUNT(*), MAX(received_at) FROM predictions "
            "WHERE rollout IN ('shadow', 'canary')"
        ).fetchone()
        labelled = conn.execute(
            "SELECT COUNT(*) FROM predictions p JOIN feedback f USING (request_id, row) "
            "WHERE p.rollout IN ('shadow', 'canary')"
        ).fetchone()
    return (*logged, *labelled)


def _live(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    both = 0 < y.sum() < len(y)
    return {
        name: (metric(name, y, p) if both or name in ("log_loss", "brier") else None)
        for name in METRICS
    } | {"rows": float(len(y))}


def evaluate(
    store: MonitorStore, cfg: RolloutDecideConfig, threshold: float, seed: int | None = 0
) -> ArmsReport | None:
    """The newest rollout's per-arm figures and verdict; None when nothing was rolled out."""
    recent = rollout_rows(store, cfg.window_rows, labelled=False)
    if recent.empty:
        return None
    mode = str(recent["rollout"].iloc[-1])
    labelled = rollout_rows(store, cfg.window_rows, labelled=True)
    return judge(mode, recent, labelled, cfg, threshold, seed)


def judge(
    mode: str,
    recent: pd.DataFrame,
    labelled: pd.DataFrame,
    cfg: RolloutDecideConfig,
    threshold: float,
    seed: int | None = 0,
) -> ArmsReport:
    """The report from rows (columns as :func:`rollout_rows` returns them)."""
    recent = recent[recent["rollout"] == mode]
    labelled = labelled[labelled["rollout"] == mode]
    arms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if mode == "shadow":
        champion = str(recent["model_version"].iloc[-1])
        scored = recent[recent["shadow_probability"].notna()]
        challenger = str(scored["shadow_version"].iloc[-1]) if len(scored) else None
        own = scored[
            (scored["model_version"] == champion) & (scored["shadow_version"] == challenger)
        ]
        divergence = None
        if len(own):
            p = own["probability"].to_numpy(dtype=float)
            q = own["shadow_probability"].to_numpy(dtype=float)
            divergence = {
                "rows": float(len(own)),
                "mean_abs": float(np.mean(np.abs(p - q))),
                "label_disagreement": float(np.mean((p >= threshold) != (q >= threshold))),
            }
        rows = labelled[
            (labelled["model_version"] == champion)
            & (labelled["shadow_version"] == challenger)
            & labelled["shadow_probability"].notna()
        ]
        y = rows["outcome"].to_numpy(dtype=float)
        arms["champion"] = (y, rows["probability"].to_numpy(dtype=float))
        arms["challenger"] = (y, rows["shadow_probability"].to_numpy(dtype=float))
    else:
        divergence = None
        by_arm = {arm: recent[recent["arm"] == arm] for arm in ("champion", "challenger")}
        versions = {
            arm: (str(f["model_version"].iloc[-1]) if len(f) else None) for arm, f in by_arm.items()
        }
        champion = versions["champion"] or "none"
        challenger = versions["challenger"]
        for arm, version in (("champion", champion), ("challenger", challenger)):
            rows = labelled[(labelled["arm"] == arm) & (labelled["model_version"] == version)]
            arms[arm] = (
                rows["outcome"].to_numpy(dtype=float),
                rows["probability"].to_numpy(dtype=float),
            )
    report = ArmsReport(
        mode=mode,
        champion_version=champion,
        challenger_version=challenger,
        labelled={arm: len(y) for arm, (y, _) in arms.items()},
        divergence=divergence,
        metric=cfg.metric,
        min_labelled_rows=cfg.min_labelled_rows,
        look_rows=cfg.look_rows(),
        confidence=cfg.confidence,
    )
    for arm, (y, p) in arms.items():
        if len(y):
            report.live[arm] = _live(y, p)
    (y0, p0), (y1, p1) = arms["champion"], arms["challenger"]
    comparable = all(len(y) >= 20 and 0 < y.sum() < len(y) for y in (y0, y1))
    reached = [k for k, n in enumerate(report.look_rows) if min(len(y0), len(y1)) >= n]
    report.look = reached[-1] if reached else None
    if comparable:
        enough = min(len(y0), len(y1)) >= cfg.min_labelled_rows
        margins = {name: cfg.margin if name == cfg.metric else 0.0 for name in METRICS}
        comparisons = compare_many(
            margins,
            (y0, p0),
            (y1, p1),
            paired=mode == "shadow",
            resamples=cfg.bootstrap,
            seed=seed,
            confidence=cfg.confidence,
        )
        for name, c in comparisons.items():
            if not enough:
                c = Comparison(**{**c.to_dict(), "verdict": UNDECIDED})
            report.comparisons[name] = c
    return report


# --- Prometheus ---------------------------------------------------------------------------

_VERDICT_VALUE = {"better": 1.0, "worse": -1.0}


def collect(report: ArmsReport | None, decisions: dict[str, int]) -> Iterator[Any]:
    """The rollout's series (families always exported, samples once there is data)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def gauge(name: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, ROLLOUT_METRICS[name], labels=list(labels))

    for name in METRICS:
        family = gauge(f"plumbline_rollout_live_{name}", ["arm", "model_version"])
        for arm, values in (report.live if report else {}).items():
            value = values.get(name)
            assert report is not None
            version = report.champion_version if arm == "champion" else report.challenger_version
            if value is not None and math.isfinite(value):
                family.add_metric([arm, str(version)], value)
        yield family
    rows = gauge("plumbline_rollout_live_labelled_rows", ["arm"])
    for arm, n in (report.labelled if report else {}).items():
        rows.add_metric([arm], float(n))
    yield rows
    divergence = gauge("plumbline_rollout_shadow_divergence")
    disagreement = gauge("plumbline_rollout_shadow_label_disagreement")
    shadow_rows = gauge("plumbline_rollout_shadow_rows")
    if report is not None and report.divergence is not None:
        divergence.add_metric([], report.divergence["mean_abs"])
        disagreement.add_metric([], report.divergence["label_disagreement"])
        shadow_rows.add_metric([], report.divergence["rows"])
    yield from (divergence, disagreement, shadow_rows)
    difference = gauge("plumbline_rollout_difference", ["metric"])
    low = gauge("plumbline_rollout_difference_low", ["metric"])
    high = gauge("plumbline_rollout_difference_high", ["metric"])
    verdict = gauge("plumbline_rollout_verdict", ["metric"])
    for name, c in (report.comparisons if report else {}).items():
        difference.add_metric([name], c.difference)
        if math.isfinite(c.low):
            low.add_metric([name], c.low)
            high.add_metric([name], c.high)
        verdict.add_metric([name], _VERDICT_VALUE.get(c.verdict, 0.0))
    yield from (difference, low, high, verdict)
    taken = CounterMetricFamily(
        "plumbline_rollout_decisions",
        ROLLOUT_METRICS["plumbline_rollout_decisions_total"],
        labels=["action"],
    )
    for action in ("promote", "end"):
        taken.add_metric([action], float(decisions.get(action, 0)))
    yield taken
