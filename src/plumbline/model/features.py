"""Feature code shared by training, batch and online prediction.

The transformer built here is fitted once (featurize) and becomes the first step of the model
pipeline, so every consumer of the model runs exactly this code on raw contract columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from plumbline.core.contract import Contract
from plumbline.model.settings import FeaturizeConfig


def build_transformer(
    contract: Contract, features: list[str], cfg: FeaturizeConfig
) -> ColumnTransformer:
    numeric = contract.numeric_columns(features)
    categorical = contract.categorical_columns(features)
    numeric_steps: list[tuple[str, Any]] = []
    if any(contract.columns[c].nullable for c in numeric):
        numeric_steps.append(("impute", SimpleImputer(strategy="median")))
    numeric_steps.append(("scale", StandardScaler() if cfg.scale_numeric else "passthrough"))
    categorical_steps: list[tuple[str, Any]] = []
    if any(contract.columns[c].nullable for c in categorical):
        categorical_steps.append(
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__"))
        )
    categorical_steps.append(
        (
            "onehot",
            OneHotEncoder(
                # Categories come from the contract, not from whatever the training split saw,
                # so a valid but rare category never becomes an "unknown" at serving time.
                categories=[list(contract.columns[c].categories or []) for c in categorical],
                handle_unknown="ignore",
                min_frequency=cfg.onehot_min_frequency,
                sparse_output=False,
                dtype=np.float64,
            ),
        )
    )
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        parts.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        parts.append(("categorical", Pipeline(categorical_steps), categorical))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=True)


def numeric_profile(
    values: np.ndarray, quantiles: int, sample_size: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Quantile bin edges, the share of values per bin, mean/std and a random sample."""
    values = values[~np.isnan(values)]
    if not len(values):
        return {
            "kind": "numeric",
            "bin_edges": [],
            "bin_fractions": [],
            "mean": None,
            "std": None,
            "sample": [],
        }
    edges = np.unique(np.quantile(values, np.linspace(0, 1, quantiles + 1)))
    counts = np.bincount(
        np.searchsorted(edges[1:-1], values, side="right"), minlength=max(len(edges) - 1, 1)
    )
    sample = (
        rng.choice(values, size=sample_size, replace=False) if len(values) > sample_size else values
    )
    return {
        "kind": "numeric",
        "bin_edges": [float(x) for x in edges],
        "bin_fractions": [float(c) / len(values) for c in counts],
        "mean": float(values.mean()),
        "std": float(values.std()),
        "sample": [float(x) for x in sample],
    }


def reference_profile(
    frame: pd.DataFrame,
    contract: Contract,
    features: list[str],
    quantiles: int,
    sample_size: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-feature distribution of the training rows, the baseline for drift checks.

    Numeric features: see :func:`numeric_profile`. Categorical features: the share of each
    contract category.
    """
    profile: dict[str, Any] = {"rows": len(frame), "features": {}}
    rng = np.random.default_rng(seed)
    for name in features:
        col = frame[name]
        spec = contract.columns[name]
        if spec.is_numeric:
            entry = numeric_profile(
                col.to_numpy(dtype=float, na_value=np.nan), quantiles, sample_size, rng
            )
        else:
            shares = col.value_counts(normalize=True, dropna=False)
            entry = {
                "kind": "categorical",
                "frequencies": {
                    str(cat): float(shares.get(cat, 0.0)) for cat in (spec.categories or [])
                },
            }
        entry["null_fraction"] = float(col.isna().mean())
        profile["features"][name] = entry
    return profile
