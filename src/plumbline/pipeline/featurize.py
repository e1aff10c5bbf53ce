"""Featurize: split the valid rows in time order, fit the feature transformer, profile train.

The split is by position after ordering by time (never a shuffle when the contract says rows
are time-ordered: a random split would let the model see the future).

:func:`featurize` does it in memory; :func:`run`, the stage, reads the valid rows and writes
the two splits, the fitted transformer and the reference profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.compose import ColumnTransformer

from plumbline.core import skops_compat
from plumbline.core.artifacts import write_json, write_parquet
from plumbline.core.contract import SOURCE_ROW, Contract
from plumbline.core.errors import PlumblineError, need
from plumbline.core.paths import Layout
from plumbline.model.features import build_transformer, reference_profile
from plumbline.model.settings import FeaturizeConfig
from plumbline.pipeline.settings import PipelineParams


class SplitError(PlumblineError):
    pass


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    order: str


@dataclass
class Featurized:
    # The splits as written: the source row, the features and the target.
    train: pd.DataFrame
    test: pd.DataFrame
    order: str  # how the rows were ordered before the split
    transformer: ColumnTransformer  # fitted on the training split
    profile: dict[str, Any]  # the training features' distributions, the baseline of drift


def time_ordered_split(frame: pd.DataFrame, contract: Contract, cfg: FeaturizeConfig) -> Split:
    if contract.time_column is not None:
        ordered = frame.sort_values([contract.time_column, SOURCE_ROW], kind="stable")
        order = f"sorted by {contract.time_column}"
    elif contract.rows_time_ordered:
        ordered = frame.sort_values(SOURCE_ROW, kind="stable")
        order = "source row order"
    else:
        rng = np.random.default_rng(cfg.split_seed)
        ordered = frame.iloc[rng.permutation(len(frame))]
        order = f"random (seed {cfg.split_seed}); the contract says rows are not time-ordered"
    n = len(ordered)
    n_train = int(np.floor(cfg.train_fraction * n))
    n_test = int(np.floor(cfg.test_fraction * n))
    if abs(cfg.train_fraction + cfg.test_fraction - 1.0) < 1e-9:
        n_test = n - n_train  # fractions that add up to 1 use every row (floor twice loses one)
    if n_train == 0 or n_test == 0:
        raise SplitError(f"{n} valid rows are too few for the configured split fractions")
    train = ordered.iloc[:n_train].reset_index(drop=True)
    test = ordered.iloc[n - n_test :].reset_index(drop=True)
    for name, part in (("train", train), ("test", test)):
        labels = set(contract.encode_target(part[contract.target.column]).tolist())
        if labels != {0, 1}:
            raise SplitError(
                f"the {name} split holds only one class of "
                f"{contract.target.column!r}; a binary model needs both"
            )
    return Split(train=train, test=test, order=order)


def fit_transformer(
    train: pd.DataFrame, contract: Contract, cfg: FeaturizeConfig
) -> ColumnTransformer:
    features = contract.feature_columns(cfg.exclude_columns)
    transformer = build_transformer(contract, features, cfg)
    transformer.fit(train[features])
    return transformer


def featurize(frame: pd.DataFrame, contract: Contract, cfg: FeaturizeConfig) -> Featurized:
    """Split the valid rows, fit the transformer on the training part and profile it."""
    split = time_ordered_split(frame, contract, cfg)
    features = contract.feature_columns(cfg.exclude_columns)
    keep = [SOURCE_ROW, *features, contract.target.column]
    transformer = fit_transformer(split.train, contract, cfg)
    profile = reference_profile(
        split.train,
        contract,
        features,
        cfg.profile_quantiles,
        cfg.profile_sample_size,
        cfg.split_seed,
    )
    profile.update(
        contract=contract.name,
        split_order=split.order,
        rows_train=len(split.train),
        rows_test=len(split.test),
        positive_rate_train=float(
            contract.encode_target(split.train[contract.target.column]).mean()
        ),
        positive_rate_test=float(contract.encode_target(split.test[contract.target.column]).mean()),
    )
    return Featurized(
        train=split.train[keep],
        test=split.test[keep],
        order=split.order,
        transformer=transformer,
        profile=profile,
    )


def run(params: PipelineParams, contract: Contract, paths: Layout) -> Featurized:
    """The stage: featurize the valid rows; write the splits, the transformer, the profile."""
    need(paths.valid, hint="run `plumbline validate` (or `dvc repro`) first")
    out = featurize(pd.read_parquet(paths.valid), contract, params.featurize)
    schema = contract.arrow_schema()
    part_schema = pa.schema([schema.field(c) for c in out.train.columns], metadata=schema.metadata)
    write_parquet(out.train, paths.train_split, part_schema)
    write_parquet(out.test, paths.test_split, part_schema)
    skops_compat.dump(out.transformer, paths.transformer)
    write_json(out.profile, paths.reference_profile)
    return out
