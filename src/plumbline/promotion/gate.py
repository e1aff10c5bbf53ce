"""The promotion gate: may the candidate model (the one under ``models/``) become champion?

The decision is made from files, not from memory. The candidate's test metrics come from
``reports/metrics.json`` (written by the evaluate stage) and must clear the absolute thresholds
in the ``gate`` section of params.yaml. When the registry already has a ``champion``, its
artifact is loaded and re-scored on today's test split (``data/features/test.parquet``), and
the candidate may not be worse than it by more than ``gate.max_regression`` on any compared
metric. Every check, passed or failed, goes to ``reports/gate.json``; a failed check also
produces a one-line reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from plumbline.core.contract import SOURCE_ROW, Contract
from plumbline.core.errors import MissingInput
from plumbline.core.paths import Layout
from plumbline.core.tracking import md5_file
from plumbline.model.artifact import ModelLoadError, ModelMetadata, positive_proba
from plumbline.model.fairness import FAIRNESS_FILE, fairness_checks
from plumbline.model.metrics import classification_metrics
from plumbline.model.runrecord import current_record
from plumbline.model.verdict import GATE_FILE, Check, GateResult, gate_result, unscored_champion
from plumbline.promotion.registry import CHAMPION, Registry
from plumbline.promotion.settings import GateConfig, PromotionParams

log = logging.getLogger(__name__)

# Metric -> the direction in which it gets better, for the absolute and champion checks.
HIGHER_IS_BETTER = ("roc_auc", "pr_auc")
LOWER_IS_BETTER = ("brier",)
COMPARED = (*HIGHER_IS_BETTER, *LOWER_IS_BETTER)


class ChampionUnscorable(Exception):
    """The champion's artifact cannot be scored on today's test split."""


@dataclass
class ChampionScore:
    version: str
    metrics: dict[str, float]
    rows: int


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def absolute_checks(metrics: dict[str, float], cfg: GateConfig) -> list[Check]:
    limits: list[tuple[str, str, float, Literal[">=", "<="]]] = [
        ("min_roc_auc", "roc_auc", cfg.min_roc_auc, ">="),
        ("min_pr_auc", "pr_auc", cfg.min_pr_auc, ">="),
        ("max_brier", "brier", cfg.max_brier, "<="),
    ]
    checks = []
    for name, metric, threshold, comparison in limits:
        value = metrics.get(metric)
        if value is None:
            checks.append(_missing(name, metric, threshold, comparison))
            continue
        ok = value >= threshold if comparison == ">=" else value <= threshold
        word = "below" if comparison == ">=" else "above"
        reason = "" if ok else f"{metric} {_fmt(value)} is {word} gate.{name} {_fmt(threshold)}"
        checks.append(Check(name, metric, float(value), threshold, comparison, ok, reason))
    return checks


def _missing(name: str, metric: str, threshold: float, comparison: Literal[">=", "<="]) -> Check:
    return Check(
        name,
        metric,
        None,
        threshold,
        comparison,
        False,
        f"{metric} is missing from reports/metrics.json",
    )


def champion_checks(
    metrics: dict[str, float], champion: ChampionScore, tolerance: float
) -> list[Check]:
    """The candidate may be worse than the champion by at most ``tolerance`` per metric."""
    checks = []
    for metric in COMPARED:
        name = f"champion_{metric}"
        value = metrics.get(metric)
        reference = champion.metrics[metric]
        higher = metric in HIGHER_IS_BETTER
        threshold = reference - tolerance if higher else reference + tolerance
        comparison: Literal[">=", "<="] = ">=" if higher else "<="
        if value is None:
            checks.append(_missing(name, metric, threshold, comparison))
            continue
        ok = value >= threshold - 1e-12 if higher else value <= threshold + 1e-12
        reason = ""
        if not ok:
            worse = reference - value if higher else value - reference
            reason = (
                f"{metric} {_fmt(value)} is {_fmt(worse)} worse than champion version "
                f"{champion.version} ({_fmt(reference)} on the same test split); "
                f"gate.max_regression allows {_fmt(tolerance)}"
            )
        checks.append(Check(name, metric, float(value), threshold, comparison, ok, reason))
    rows = metrics.get("rows")
    if rows is not None and int(rows) != champion.rows:
        checks.append(
            Check(
                "same_test_split",
                "rows",
                float(rows),
                float(champion.rows),
                "==",
                False,
                f"reports/metrics.json counts {int(rows)} test rows but data/features/test.parquet "
                f"has {champion.rows}: the metrics are stale, run `dvc repro`",
            )
        )
    return checks


def decide(
    metrics: dict[str, float],
    cfg: GateConfig,
    champion: ChampionScore | None,
    model_name: str,
    champion_error: tuple[str, str] | None = None,
    candidate: dict[str, Any] | None = None,
    fairness: dict[str, Any] | None = None,
) -> GateResult:
    """The verdict on crafted or real metrics.

    ``champion`` is None on an empty registry; ``champion_error`` is (version, reason) when the
    registry has a champion that could not be re-scored, which fails the gate.
    """
    checks = absolute_checks(metrics, cfg)
    checks.extend(fairness_checks(fairness or {}, cfg.fairness))
    champion_info: dict[str, Any] | None = None
    if champion is not None:
        checks.extend(champion_checks(metrics, champion, cfg.max_regression))
        champion_info = {
            "version": champion.version,
            "metrics": champion.metrics,
            "test_rows": champion.rows,
        }
        note = (
            f"compared with champion version {champion.version}, re-scored on "
            f"{champion.rows} test rows"
        )
    elif champion_error is not None:
        check, champion_info = unscored_champion(champion_error)
        checks.append(check)
        note = "the champion could not be re-scored"
    else:
        note = f"no champion in registered model {model_name!r} yet: absolute thresholds only"
    return gate_result(
        model_name, candidate, metrics, checks, champion_info, cfg.max_regression, note
    )


def scoring_frame(paths: Layout, needed: list[str]) -> pd.DataFrame:
    """Today's test split with the columns ``needed`` by a model.

    A champion trained before a feature was dropped still needs that column; it is taken from
    the validated rows (``data/interim/valid.parquet``) of the same test rows.
    """
    test = pd.read_parquet(paths.test_split)
    missing = [c for c in needed if c not in test.columns]
    if missing and SOURCE_ROW in test.columns and paths.valid.is_file():
        available = set(pq.read_schema(paths.valid).names)
        take = [c for c in missing if c in available]
        if take:
            extra = pd.read_parquet(paths.valid, columns=[SOURCE_ROW, *take])
            test = test.merge(extra, on=SOURCE_ROW, how="left", validate="one_to_one")
            if test[take].isna().all(axis=None):
                raise ChampionUnscorable(
                    f"{paths.valid} does not hold the rows of {paths.test_split}"
                )
        missing = [c for c in needed if c not in test.columns]
    if missing:
        raise ChampionUnscorable(f"the test split lacks columns the model needs: {missing}")
    return test


def score(
    model: Any, paths: Layout, contract: Contract, params: PromotionParams
) -> dict[str, float]:
    """Re-score a model on today's test split with the same metrics as the evaluate stage."""

    needed = [str(c) for c in getattr(model, "feature_names_in_", [])] or contract.feature_columns(
        params.featurize.exclude_columns
    )
    frame = scoring_frame(paths, needed)
    y = contract.encode_target(frame[contract.target.column])
    try:
        p = positive_proba(model, frame[needed])
    except (ValueError, KeyError) as err:
        raise ChampionUnscorable(f"scoring failed: {err}") from None
    return classification_metrics(y, np.asarray(p), params.evaluate.threshold)


def candidate_identity(paths: Layout) -> dict[str, Any]:
    card = ModelMetadata.read(paths.model_metadata) if paths.model_metadata.is_file() else None
    record = current_record(paths)
    return {
        "model_md5": md5_file(paths.model) if paths.model.is_file() else None,
        "mlflow_run_id": record.mlflow_run_id if record else None,
        "estimator": card.estimator if card else None,
    }


def run(params: PromotionParams, contract: Contract, paths: Layout) -> GateResult:
    """Decide, write reports/gate.json and return the result (passed or not)."""
    try:
        metrics = json.loads(paths.metrics.read_text())
    except FileNotFoundError:
        raise MissingInput(
            f"{paths.metrics} not found: run `dvc repro` (the evaluate stage) first"
        ) from None
    registry = Registry.from_params(params, paths.root)
    champion: ChampionScore | None = None
    champion_error: tuple[str, str] | None = None
    version = registry.alias_version(CHAMPION)
    if version is not None:
        try:
            model = registry.load(version)
            scored = score(model, paths, contract, params)
            champion = ChampionScore(version=version, metrics=scored, rows=int(scored["rows"]))
        except (ModelLoadError, ChampionUnscorable) as err:
            champion_error = (
                version,
                f"champion version {version} could not be re-scored on the test split: {err}",
            )
    fairness_file = paths / FAIRNESS_FILE
    fairness = json.loads(fairness_file.read_text()) if fairness_file.is_file() else None
    result = decide(
        metrics,
        params.gate,
        champion,
        registry.name,
        champion_error,
        candidate_identity(paths),
        fairness,
    )
    result.write(paths / GATE_FILE)
    return result


def markdown_table(result: GateResult) -> str:
    """The checks as a markdown table (for report.md)."""

    def show(metric: str, x: float) -> str:
        return f"{x:.0f}" if metric == "rows" else _fmt(x)

    rows = ["| Check | Metric | Value | Needs | Result |", "|---|---|---|---|---|"]
    for c in result.checks:
        value = "missing" if c.value is None else show(c.metric, c.value)
        if c.name == "champion_rescored":
            value, needs = "-", "champion re-scored"
        else:
            needs = f"{c.comparison} {show(c.metric, c.threshold)}"
        rows.append(
            f"| {c.name} | {c.metric or '-'} | {value} | {needs} | "
            f"{'pass' if c.passed else '**FAIL**'} |"
        )
    return "\n".join(rows)
