"""Live per-slice rates: positive rate per group over logged rows, TPR/FPR over labelled
ones, exported as plumbline_live_slice_* for the serving version."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, generate_latest
from support.serve import metric_value

from plumbline.core.contract import Contract
from plumbline.monitoring.monitor import METRICS
from plumbline.monitoring.slices import families, live_slices


def _window(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    marital = rng.choice(["married", "single"], n)
    age = rng.integers(18, 80, n)
    outcome = rng.integers(0, 2, n)
    # married: labelled positive twice as often
    label = (rng.random(n) < np.where(marital == "married", 0.4, 0.2)).astype(int)
    return pd.DataFrame({"marital": marital, "age": age, "label": label, "outcome": outcome})


def test_rates_per_group(contract: Contract) -> None:
    w = _window()
    slices = live_slices(w, w, contract)
    by = {(s["slice"], s["group"]): s for s in slices}
    for group in ("married", "single"):
        m = w["marital"] == group
        entry = by[("marital", group)]
        assert entry["rows"] == m.sum()
        assert entry["positive_rate"] == w.loc[m, "label"].mean()
        assert entry["tpr"] == w.loc[m & (w.outcome == 1), "label"].mean()
        assert entry["fpr"] == w.loc[m & (w.outcome == 0), "label"].mean()
    band = (w["age"] >= 40) & (w["age"] < 60)
    assert by[("age_band", "[40, 60)")]["rows"] == band.sum()
    assert sum(s["rows"] for s in slices if s["slice"] == "age_band") == len(w)
    # no labels yet: rates only
    assert all(s["tpr"] is None for s in live_slices(w, None, contract))


def test_exported_with_slice_group_and_version(contract: Contract) -> None:
    w = _window()
    slices = live_slices(w, w, contract)

    class Collector:
        def collect(self):  # type: ignore[no-untyped-def]
            yield from families(slices, "3")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    text = generate_latest(registry).decode()
    married = w["marital"] == "married"
    labels = {"slice": "marital", "group": "married", "model_version": "3"}
    value = metric_value(text, "plumbline_live_slice_positive_rate", **labels)
    assert value == w.loc[married, "label"].mean()
    assert metric_value(text, "plumbline_live_slice_rows", **labels) == married.sum()
    for name in ("rows", "positive_rate", "tpr", "fpr"):
        assert f"plumbline_live_slice_{name}" in METRICS
    # no serving version: the families exist, without series
    assert all(f.samples == [] for f in families(slices, None))
