"""Checks that a model card's numbers are the ones in reports/metrics.json and validation.json."""

from __future__ import annotations

import re
from typing import Any

METRIC_ROW = re.compile(r"^\| (\w+) \| (-?\d+\.\d{4}) \| (-?\d+\.\d{4}) - (-?\d+\.\d{4}) \|$")
COUNTS = re.compile(r"Rows in: ([\d,]+); valid: ([\d,]+); quarantined: ([\d,]+)")


def card_mismatches(card: str, metrics: dict[str, Any], validation: dict[str, Any]) -> list[str]:
    """Every metric row and count of the card against the reports; [] when all match."""
    problems: list[str] = []
    seen = set()
    for line in card.splitlines():
        m = METRIC_ROW.match(line)
        if not m:
            continue
        name, value, low, high = m.group(1), *map(float, m.groups()[1:])
        seen.add(name)
        if abs(value - metrics[name]) > 5e-5:
            problems.append(f"{name}: card {value} vs metrics.json {metrics[name]}")
        if not low - 5e-5 <= value <= high + 5e-5:
            problems.append(f"{name}: {value} outside its interval {low} - {high}")
    for name in ("roc_auc", "pr_auc", "precision", "recall", "f1", "log_loss", "brier"):
        if name not in seen:
            problems.append(f"{name}: no row in the card's metrics table")
    counts = COUNTS.search(card)
    if counts is None:
        problems.append("no 'Rows in: ...' line")
    else:
        got = [int(x.replace(",", "")) for x in counts.groups()]
        want = [validation[k] for k in ("rows_in", "rows_valid", "rows_quarantined")]
        if got != want:
            problems.append(f"rows in/valid/quarantined: card {got} vs validation.json {want}")
    if f"{metrics['threshold']:.2f}" not in card:
        problems.append("the threshold is not in the card")
    return problems
