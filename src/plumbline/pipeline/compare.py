"""Compare: the estimators, as written and tuned, on the same test split, with intervals.

``plumbline compare`` answers "is the difference real?" before a model is promoted. Each
candidate (an estimator with its hyperparameters as written in ``train.<estimator>``, or as the
tune stage's search on the training split chooses them) is fitted as train fits it
(:func:`plumbline.pipeline.train.fit`, the shared transformer) and scored on the test split.
Each gets its test metrics with 95 % bootstrap intervals (the model card's,
:func:`plumbline.pipeline.model_card.bootstrap_intervals`), and its difference from the
reference candidate (the first one: ``train.estimator`` as written, what the pipeline ships)
with the paired-bootstrap interval of the difference and a verdict
(:func:`plumbline.model.stats.compare_many`, the retrain gate's comparison). Paired: both
models scored the same rows, so the interval is that of the difference itself.

Nothing here is a DVC output: the report (``reports/compare/compare.md`` and ``.json``) is a
decision aid, written where the command is run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plumbline.core import skops_compat
from plumbline.core.contract import Contract
from plumbline.core.errors import PlumblineError, need
from plumbline.core.paths import Layout
from plumbline.model.artifact import TRUSTED_TYPES, positive_proba
from plumbline.model.metrics import score_metrics
from plumbline.model.settings import ESTIMATORS
from plumbline.model.stats import METRICS, compare_many
from plumbline.pipeline.model_card import bootstrap_intervals
from plumbline.pipeline.settings import PipelineParams
from plumbline.pipeline.train import fit
from plumbline.pipeline.tune import tune

REPORT_DIR = "reports/compare"


@dataclass
class Candidate:
    name: str  # "<estimator>" or "<estimator> (tuned)"
    estimator: str
    tuned: bool
    hyperparameters: dict[str, Any]
    fit_seconds: float
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    versus_reference: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Compared:
    reference: str
    rows: int
    resamples: int
    candidates: list[Candidate]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "test_rows": self.rows,
            "resamples": self.resamples,
            "candidates": [c.__dict__ for c in self.candidates],
        }


def compare(
    train: pd.DataFrame,
    test: pd.DataFrame,
    transformer: Any,
    contract: Contract,
    params: PipelineParams,
    estimators: list[str],
    tuned: bool,
    untuned: bool,
    resamples: int = 1000,
) -> Compared:
    """Fit every candidate on ``train`` and compare them on ``test``; the first is the
    reference."""
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown:
        raise PlumblineError(f"unknown estimators {unknown}: choose from {list(ESTIMATORS)}")
    if not (tuned or untuned):
        raise PlumblineError("nothing to compare: give as-written, tuned or both")
    features = contract.feature_columns(params.featurize.exclude_columns)
    y_test = contract.encode_target(test[contract.target.column])
    time_ordered = contract.time_column is not None or contract.rows_time_ordered
    x_train = np.asarray(transformer.transform(train[features]), dtype=np.float64)
    y_train = np.asarray(contract.encode_target(train[contract.target.column]))
    threshold = params.evaluate.threshold
    candidates: list[Candidate] = []
    scores: list[np.ndarray] = []
    for estimator in estimators:
        written = params.train.model_copy(update={"estimator": estimator})
        variants: list[tuple[bool, Any]] = []
        if untuned:
            variants.append((False, written))
        if tuned:
            choice = tune(x_train, y_train, written, params.tune, time_ordered).best
            if choice["tuned"]:
                variants.append((True, written.with_hyperparameters(choice["params"])))
        for is_tuned, cfg in variants:
            start = time.perf_counter()
            model, _ = fit(train, transformer, contract, params, cfg)
            seconds = time.perf_counter() - start
            p = positive_proba(model, test[features])
            scores.append(p)
            candidates.append(
                Candidate(
                    name=f"{estimator} (tuned)" if is_tuned else estimator,
                    estimator=estimator,
                    tuned=is_tuned,
                    hyperparameters=getattr(cfg, estimator).model_dump(mode="json"),
                    fit_seconds=round(seconds, 3),
                    metrics=score_metrics(y_test, p, threshold),
                    intervals=bootstrap_intervals(y_test, p, threshold, params.train.seed),
                )
            )
    reference = scores[0]
    for candidate, p in zip(candidates[1:], scores[1:], strict=True):
        result = compare_many(
            {m: 0.0 for m in METRICS},
            (y_test, reference),
            (y_test, p),
            paired=True,
            resamples=resamples,
            seed=params.train.seed,
        )
        candidate.versus_reference = {m: c.to_dict() for m, c in result.items()}
    return Compared(candidates[0].name, len(test), resamples, candidates)


def markdown(result: Compared) -> str:
    """The report: per candidate its test metrics with intervals, and its difference from the
    reference with the paired interval and the verdict."""
    lines = [
        f"# Estimators on the same test split ({result.rows} rows)",
        "",
        "95 % bootstrap intervals. The difference is the candidate minus the reference "
        f"(**{result.reference}**) on the same rows, with a paired-bootstrap interval of "
        f"{result.resamples} resamples; *better* / *worse* only when the whole interval says so.",
        "",
        "| candidate | fit s | ROC AUC | PR AUC | log loss | Brier | Δ ROC AUC vs reference "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result.candidates:
        cells = [
            f"{c.metrics[m]:.4f} [{c.intervals[m][0]:.4f}, {c.intervals[m][1]:.4f}]"
            if m in c.intervals
            else f"{c.metrics[m]:.4f}"
            for m in ("roc_auc", "pr_auc", "log_loss", "brier")
        ]
        versus = c.versus_reference.get("roc_auc")
        delta = (
            f"{versus['difference']:+.4f} [{versus['low']:+.4f}, {versus['high']:+.4f}]"
            if versus
            else "(reference)"
        )
        verdict = versus["verdict"] if versus else ""
        lines.append(
            f"| {c.name} | {c.fit_seconds:.2f} | {' | '.join(cells)} | {delta} | {verdict} |"
        )
    lines += ["", "Hyperparameters:", ""]
    for c in result.candidates:
        lines.append(f"- {c.name}: `{json.dumps(c.hyperparameters)}`")
    return "\n".join(lines) + "\n"


def run(
    params: PipelineParams,
    contract: Contract,
    paths: Layout,
    estimators: list[str],
    tuned: bool = True,
    untuned: bool = True,
    resamples: int = 1000,
    out_dir: Path | None = None,
) -> tuple[Compared, Path]:
    """The command: compare on the workspace's splits; writes compare.md and compare.json."""
    need(paths.train_split, paths.test_split, paths.transformer, hint="run `dvc repro` first")
    train = pd.read_parquet(paths.train_split)
    test = pd.read_parquet(paths.test_split)
    if contract.time_column is not None:
        train = train.sort_values(contract.time_column, kind="stable").reset_index(drop=True)
    transformer = skops_compat.load(paths.transformer, TRUSTED_TYPES)
    result = compare(
        train, test, transformer, contract, params, estimators, tuned, untuned, resamples
    )
    out = out_dir or paths.root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    report = out / "compare.md"
    report.write_text(markdown(result))
    return result, report
