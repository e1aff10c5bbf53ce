"""The fair gate of automatic retrains: is the challenger better than the champion *now*?

``plumbline gate --retrain`` (what the monitor's retrain runs) scores the challenger (the model
under ``models/``) and the re-scored champion on the same rows: the window's test split, the
newest labelled live rows, which neither model trained on (featurize splits the window in time
order, and ``retrain.min_new_labels`` keeps a previous retrain's rows out of it). It passes when

* the challenger is better on ``retrain.comparison.primary_metric`` by at least
  ``min_improvement``, and the lower end of the paired-bootstrap interval of that difference
  (rows resampled together for both models, at ``confidence``) is above 0, so that a small
  lucky window does not promote;
* it is not worse than the champion by more than ``tolerance`` on the other metrics;
* it clears the absolute floors of ``retrain.gate`` (sanity floors, e.g. ROC AUC > 0.55;
  the offline ``gate`` floors were set for the original test split).

The offline gate (``plumbline gate``, :mod:`plumbline.promotion.gate`) is unchanged. ``gate.json``
gets a
``comparison`` section with both models' values on those rows, the difference and its
interval; the same figures are in the verdict's note, which the champion history entry and the
monitor's retrain record repeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from plumbline.core.contract import Contract
from plumbline.core.errors import MissingInput
from plumbline.core.paths import Layout
from plumbline.model.artifact import ModelLoadError, load_model, positive_proba
from plumbline.model.metrics import classification_metrics
from plumbline.model.verdict import GATE_FILE, Check, GateResult, gate_result, unscored_champion
from plumbline.promotion.gate import (
    ChampionUnscorable,
    absolute_checks,
    candidate_identity,
    scoring_frame,
)
from plumbline.promotion.registry import CHAMPION, Registry
from plumbline.promotion.settings import GateConfig, PromotionParams, RetrainComparisonConfig

METRICS = ("roc_auc", "pr_auc", "brier")
LOWER_IS_BETTER = frozenset({"brier"})


def _roc_auc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``y``/``p`` (resamples), by the rank-sum formula; NaN where a
    resample holds one class only."""
    ranks = rankdata(p, axis=1)
    pos = y.sum(axis=1)
    neg = y.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(axis=1) - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc, np.nan)


def _pr_auc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Average precision of each row (as scikit-learn computes it: tied scores form one
    threshold); NaN where a resample holds one class only."""
    order = np.argsort(-p, axis=1, kind="stable")
    s = np.take_along_axis(p, order, axis=1)
    t = np.take_along_axis(y, order, axis=1)
    n = y.shape[1]
    tp = np.cumsum(t, axis=1)
    precision = tp / np.arange(1, n + 1)
    # Each row takes the precision at the end of its group of tied scores.
    end = np.ones_like(s, dtype=bool)
    end[:, :-1] = s[:, :-1] != s[:, 1:]
    last = np.where(end, np.arange(n), n - 1)
    last = np.flip(np.minimum.accumulate(np.flip(last, axis=1), axis=1), axis=1)
    at_end = np.take_along_axis(precision, last, axis=1)
    pos = t.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (at_end * t).sum(axis=1) / pos
    return np.where((pos > 0) & (pos < n), ap, np.nan)


def _brier_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.asarray(((p - y) ** 2).mean(axis=1), dtype=float)


METRIC_ROWS = {"roc_auc": _roc_auc_rows, "pr_auc": _pr_auc_rows, "brier": _brier_rows}


@dataclass(frozen=True)
class Difference:
    """One metric of both models on the same rows; ``improvement`` is positive when the
    challenger is better (for Brier score: lower)."""

    metric: str
    challenger: float
    champion: float
    improvement: float
    low: float
    high: float
    confidence: float

    def text(self) -> str:
        pct = round(self.confidence * 100)
        return (
            f"{self.metric} {self.challenger:.4f} vs champion {self.champion:.4f}: "
            f"improvement {self.improvement:+.4f} ({pct}% CI {self.low:+.4f} to {self.high:+.4f})"
        )


def metric_value(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    return float(METRIC_ROWS[metric](y[None, :], p[None, :])[0])


def paired_bootstrap(
    metric: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    samples: int,
    confidence: float,
    seed: int,
) -> Difference:
    """The challenger's improvement over the champion on ``metric`` and its percentile
    interval, resampling the rows together for both models (the pairing cancels the noise the
    rows share)."""
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(samples, len(y)))
    rows = METRIC_ROWS[metric]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    boot = sign * (rows(y[idx], challenger[idx]) - rows(y[idx], champion[idx]))
    boot = boot[np.isfinite(boot)]
    a, b = metric_value(metric, y, challenger), metric_value(metric, y, champion)
    alpha = (1.0 - confidence) / 2
    low, high = (
        (float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha)))
        if len(boot)
        else (float("nan"), float("nan"))
    )
    return Difference(metric, a, b, sign * (a - b), low, high, confidence)


def compare(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    cfg: RetrainComparisonConfig,
    champion_version: str,
) -> tuple[list[Check], dict[str, Any]]:
    """The comparison checks and the ``comparison`` section of gate.json."""
    checks: list[Check] = []
    differences: dict[str, Difference] = {}
    rows = len(y)
    for i, metric in enumerate(METRICS):
        d = paired_bootstrap(
            metric, y, challenger, champion, cfg.bootstrap_samples, cfg.confidence, cfg.seed + i
        )
        differences[metric] = d
        on = f"on the same {rows} newest labelled rows (champion version {champion_version})"
        if metric == cfg.primary_metric:
            ok = d.improvement >= cfg.min_improvement - 1e-12
            reason = (
                ""
                if ok
                else f"{d.text()} {on}: below retrain.comparison.min_improvement "
                f"{cfg.min_improvement:.4f}"
            )
            checks.append(
                Check(
                    f"retrain_improvement_{metric}",
                    metric,
                    d.improvement,
                    cfg.min_improvement,
                    ">=",
                    ok,
                    reason,
                )
            )
            sure = bool(np.isfinite(d.low) and d.low > 0)
            reason = (
                ""
                if sure
                else f"{d.text()} {on}: the interval reaches {d.low:+.4f}, so the gain may be "
                "noise (a small or lucky window)"
            )
            checks.append(
                Check(f"retrain_interval_{metric}", metric, d.low, 0.0, ">=", sure, reason)
            )
        else:
            ok = d.improvement >= -cfg.tolerance - 1e-12
            reason = (
                ""
                if ok
                else f"{d.text()} {on}: worse than retrain.comparison.tolerance "
                f"{cfg.tolerance:.4f} allows"
            )
            checks.append(
                Check(
                    f"retrain_not_worse_{metric}",
                    metric,
                    d.improvement,
                    -cfg.tolerance,
                    ">=",
                    ok,
                    reason,
                )
            )
    section = {
        "rows": rows,
        "positives": int(np.asarray(y).sum()),
        "champion_version": champion_version,
        "primary_metric": cfg.primary_metric,
        "min_improvement": cfg.min_improvement,
        "confidence": cfg.confidence,
        "bootstrap_samples": cfg.bootstrap_samples,
        "tolerance": cfg.tolerance,
        "metrics": {
            m: {
                "challenger": d.challenger,
                "champion": d.champion,
                "improvement": d.improvement,
                "interval": [d.low, d.high],
            }
            for m, d in differences.items()
        },
    }
    return checks, section


def decide(
    metrics: dict[str, float],
    floors: GateConfig,
    cfg: RetrainComparisonConfig,
    model_name: str,
    scored: tuple[np.ndarray, np.ndarray, np.ndarray, str] | None,
    champion_error: tuple[str, str] | None = None,
    candidate: dict[str, Any] | None = None,
) -> GateResult:
    """The verdict: the absolute floors, then (with a champion) the paired comparison on
    ``scored`` = (outcomes, challenger scores, champion scores, champion version)."""
    checks = absolute_checks(metrics, floors)
    champion_info: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    if scored is not None:
        y, p_new, p_old, version = scored
        more, comparison = compare(y, p_new, p_old, cfg, version)
        checks.extend(more)
        primary = comparison["metrics"][cfg.primary_metric]
        champion_info = {
            "version": version,
            "metrics": {m: v["champion"] for m, v in comparison["metrics"].items()},
            "test_rows": len(y),
        }
        pct = round(cfg.confidence * 100)
        note = (
            f"retrain gate: {cfg.primary_metric} {primary['challenger']:.4f} vs champion "
            f"version {version} {primary['champion']:.4f} on the same {len(y)} newest labelled "
            f"rows, improvement {primary['improvement']:+.4f} ({pct}% CI "
            f"{primary['interval'][0]:+.4f} to {primary['interval'][1]:+.4f})"
        )
    elif champion_error is not None:
        check, champion_info = unscored_champion(champion_error)
        checks.append(check)
        note = "retrain gate: the champion could not be re-scored"
    else:
        note = f"retrain gate: no champion in registered model {model_name!r} yet: floors only"
    return gate_result(
        model_name, candidate, metrics, checks, champion_info, cfg.tolerance, note, comparison
    )


def _scores(model: Any, frame: Any, contract: Contract, params: PromotionParams) -> np.ndarray:
    needed = [str(c) for c in getattr(model, "feature_names_in_", [])] or contract.feature_columns(
        params.featurize.exclude_columns
    )
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ChampionUnscorable(f"the test split lacks columns the model needs: {missing}")
    try:
        return positive_proba(model, frame[needed])
    except (ValueError, KeyError) as err:
        raise ChampionUnscorable(f"scoring failed: {err}") from None


def run(params: PromotionParams, contract: Contract, paths: Layout) -> GateResult:
    """Decide, write reports/gate.json and return the result (passed or not)."""
    try:
        metrics = json.loads(paths.metrics.read_text())
    except FileNotFoundError:
        raise MissingInput(
            f"{paths.metrics} not found: run `dvc repro` (the evaluate stage) first"
        ) from None
    cfg = params.retrain.comparison
    floors = params.retrain.gate or params.gate
    registry = Registry.from_params(params, paths.root)
    version = registry.alias_version(CHAMPION)
    scored: tuple[np.ndarray, np.ndarray, np.ndarray, str] | None = None
    champion_error: tuple[str, str] | None = None
    if version is not None:
        try:
            champion = registry.load(version)
            challenger = load_model(paths.model)
            needed = {
                str(c) for m in (champion, challenger) for c in getattr(m, "feature_names_in_", [])
            }
            frame = scoring_frame(paths, sorted(needed))
            y = contract.encode_target(frame[contract.target.column])
            scored = (
                np.asarray(y, dtype=np.int64),
                _scores(challenger, frame, contract, params),
                _scores(champion, frame, contract, params),
                version,
            )
        except (ModelLoadError, ChampionUnscorable) as err:
            champion_error = (
                version,
                f"champion version {version} could not be re-scored on the test split: {err}",
            )
    if not cfg.enabled and scored is not None:
        # The comparison is switched off: the offline rule (no regression beyond
        # gate.max_regression against the re-scored champion) judges the retrain.
        from plumbline.promotion.gate import ChampionScore
        from plumbline.promotion.gate import decide as offline

        y, _, p_old, v = scored
        champ = classification_metrics(y, p_old, params.evaluate.threshold)
        result = offline(
            metrics,
            floors,
            ChampionScore(v, champ, len(y)),
            registry.name,
            None,
            candidate_identity(paths),
        )
    else:
        result = decide(
            metrics, floors, cfg, registry.name, scored, champion_error, candidate_identity(paths)
        )
    result.write(paths / GATE_FILE)
    return result
