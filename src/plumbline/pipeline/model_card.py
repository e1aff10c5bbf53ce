"""The human model card: ``reports/model_card.md``, one per model version.

evaluate writes it from files only (the contract's ``use:`` section, ingest/validation counts,
the split, metrics with bootstrap intervals, the slice table, the top global features), so it
is a byte-reproducible DVC output. What only registration knows (the version, the commit and
the MLflow run) is added by ``plumbline promote`` (:func:`attach`), which stores the completed
card as an artifact of the version's run and as the version's description.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plumbline.core.contract import Contract
from plumbline.model.metrics import ResampleScorer

MODEL_CARD_FILE = "reports/model_card.md"
CARD_TAG = "plumbline.model_card"  # the registry version's tag: the card's artifact URI
CARD_METRICS = ("roc_auc", "pr_auc", "precision", "recall", "f1", "log_loss", "brier")
BOOTSTRAP_SAMPLES = 200
DESCRIPTION_LIMIT = 5000  # MLflow's SQL stores keep at most this many characters


def bootstrap_intervals(
    y: np.ndarray, p: np.ndarray, threshold: float, seed: int, samples: int = BOOTSTRAP_SAMPLES
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of the test metrics over resamples of the test rows."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in CARD_METRICS}
    n = len(y)
    scorer = ResampleScorer(y, p, threshold)
    for _ in range(samples):
        scored = scorer.score(scorer.counts(rng.integers(0, n, size=n)))
        if scored is None:
            continue  # ROC AUC is undefined on a one-class resample
        for m in CARD_METRICS:
            draws[m].append(scored[m])
    return {
        m: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
        for m, v in draws.items()
        if v
    }


@dataclass
class CardInputs:
    estimator: str
    contract: Contract
    features: list[str]
    excluded: list[str]
    ingest: dict[str, Any]
    validation: dict[str, Any]
    split: dict[str, Any]  # train/test fractions, rows and source-row ranges
    metrics: dict[str, float]  # as written to reports/metrics.json (rounded)
    intervals: dict[str, tuple[float, float]]
    fairness: dict[str, Any]
    importance: pd.DataFrame | None
    data_hashes: dict[str, str]
    tuning: dict[str, Any] = field(default_factory=dict)  # reports/tune/best_params.json


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not float(x).is_integer():
        return f"{x:.4f}"
    return f"{int(x):,}" if isinstance(x, int | float) else str(x)


def _tuning_lines(tuning: dict[str, Any]) -> list[str]:
    """How the hyperparameters were chosen, when the tune stage searched them."""
    if not tuning.get("tuned"):
        return []
    chosen = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in tuning.get("params", {}).items())
    trial = tuning.get("best_trial")
    source = f"trial {trial}" if trial is not None else "the values as written (no trial beat them)"
    return [
        f"Hyperparameters: {chosen}, from {source} of a {tuning.get('trials')}-trial seeded "
        f"search; cross-validated {tuning.get('metric')} {_fmt(tuning.get('best_value'))} over "
        f"{tuning.get('folds')} {tuning.get('fold_order')} folds of the training split (as "
        f"written: {_fmt(tuning.get('as_written_value'))}).",
        "",
    ]


def render(c: CardInputs) -> str:
    use = c.contract.use
    lines = [f"# Model card: {c.contract.name} classifier", ""]
    lines += [
        f"Binary classifier ({c.estimator}) for `{c.contract.target.column}` = "
        f"`{c.contract.target.positive}` on data contract `{c.contract.name}`"
        + (f": {c.contract.description}" if c.contract.description else "."),
        "",
        *_tuning_lines(c.tuning),
        "## Intended use",
        "",
        use.intended if use else "_Not stated: add a `use:` section to the contract._",
        "",
        "## Out-of-scope use",
        "",
        use.out_of_scope if use else "_Not stated: add a `use:` section to the contract._",
        "",
        "## Training data",
        "",
    ]
    source = c.ingest.get("source", {})
    where = source.get("path") or source.get("url") or source.get("table") or "-"
    if not c.validation:
        lines.append("- _No validation record (reports/validation.json): run `dvc repro`._")
    lines += [
        f"- Source: {source.get('kind', '-')} `{where}`",
        f"- Content hash (sha256 of the typed rows): `{c.ingest.get('content_sha256', '-')}`",
        f"- Rows in: {_fmt(c.validation.get('rows_in'))}; valid: "
        f"{_fmt(c.validation.get('rows_valid'))}; quarantined: "
        f"{_fmt(c.validation.get('rows_quarantined'))}",
    ]
    reasons = sorted(c.validation.get("checks", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    if reasons:
        top = ", ".join(f"`{name}` {_fmt(count)}" for name, count in reasons[:5])
        lines.append(f"- Top quarantine reasons: {top}")
    lines += ["", "## Split", ""]
    s = c.split
    lines += [
        f"- {s['order']}: the first {s['train_fraction']:.0%} of rows train, the last "
        f"{s['test_fraction']:.0%} test",
        f"- Train: {_fmt(s['train_rows'])} rows (source rows {s['train_range']})",
        f"- Test: {_fmt(s['test_rows'])} rows (source rows {s['test_range']})",
        "",
        "## Features",
        "",
        ", ".join(f"`{f}`" for f in c.features),
        "",
    ]
    if c.excluded:
        lines += ["Excluded:", ""]
        for name in c.excluded:
            spec = c.contract.columns.get(name)
            why = spec.description if spec and spec.description else "listed in exclude_columns"
            lines.append(f"- `{name}`: {why}")
        lines.append("")
    lines += [
        "## Metrics (test split)",
        "",
        f"At threshold {c.metrics['threshold']:.2f}; 95 % intervals from "
        f"{BOOTSTRAP_SAMPLES} bootstrap resamples of the test rows.",
        "",
        "| Metric | Value | 95 % interval |",
        "|---|---:|---:|",
    ]
    for m in CARD_METRICS:
        lo_hi = c.intervals.get(m)
        interval = f"{lo_hi[0]:.4f} - {lo_hi[1]:.4f}" if lo_hi else "-"
        lines.append(f"| {m} | {c.metrics[m]:.4f} | {interval} |")
    lines += ["", "## Slices", ""]
    lines += slice_tables(c.fairness) or ["_No `slices:` in the contract._"]
    lines += ["", "## Top global features", ""]
    if c.importance is not None:
        from plumbline.model.importance import markdown_table

        lines.append(markdown_table(c.importance))
    else:
        lines.append("_Not computed._")
    lines += ["", "## Known limitations", ""]
    limits = use.limitations if use else []
    lines += [f"- {text}" for text in limits] or ["_None stated in the contract._"]
    lines += ["", "## Lineage", ""]
    lines += [f"- {name}: `{digest}`" for name, digest in sorted(c.data_hashes.items())]
    lines.append(
        "- Registry version, commit and MLflow run: added when `plumbline promote` registers "
        "this model."
    )
    return "\n".join(lines) + "\n"


def slice_tables(fairness: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, table in fairness.get("slices", {}).items():
        lines += [
            f"### {name}",
            "",
            "| Group | Rows | Positive rate | Selection rate | ROC AUC | TPR | FPR | Precision |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for group, e in table["groups"].items():
            cells = [
                _fmt(e[k])
                for k in ("positive_rate", "selection_rate", "roc_auc", "tpr", "fpr", "precision")
            ]
            lines.append(f"| {group} | {e['rows']:,} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Demographic parity difference {_fmt(table['demographic_parity_difference'])}, "
            f"ratio {_fmt(table['demographic_parity_ratio'])}; equalized odds difference "
            f"{_fmt(table['equalized_odds_difference'])}.",
            "",
        ]
    return lines


def registered_card(
    card: str, name: str, version: str, tags: dict[str, str], run_id: str | None
) -> str:
    """The card as the registry keeps it: the lineage that only registration knows, appended."""
    return card + "\n".join(
        [
            "",
            "## Registration",
            "",
            f"- Registered model: {name}",
            f"- Registry version: {version}",
            f"- Commit: `{tags.get('plumbline.git_commit', 'unknown')}`",
            f"- MLflow run: `{run_id or 'none'}`",
            f"- Registered at: {tags.get('plumbline.registered_at', '-')}",
            f"- Gate: {tags.get('gate.verdict', '-')}",
            "",
        ]
    )


def attach(client: Any, name: str, version: str, card_path: Path) -> str | None:
    """Store the card with registry version ``version``: artifact, description and tag.

    Returns the artifact URI, or None when there is no card (evaluate has not run).
    """
    if not card_path.is_file():
        return None
    mv = client.get_model_version(name, version)
    tags = dict(mv.tags)
    text = registered_card(card_path.read_text(), name, version, tags, mv.run_id)
    uri = f"registry version {version} description only"
    if mv.run_id:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"model_card_v{version}.md"
            out.write_text(text)
            client.log_artifact(mv.run_id, str(out), artifact_path="model_card")
        uri = f"runs:/{mv.run_id}/model_card/model_card_v{version}.md"
    description = text
    if len(description) > DESCRIPTION_LIMIT:
        tail = f"\n\n_Truncated: the full card is {uri}._\n"
        description = description[: DESCRIPTION_LIMIT - len(tail)] + tail
    client.update_model_version(name, version, description=description)
    client.set_model_version_tag(name, version, CARD_TAG, uri)
    return uri
