"""Featurize: split the valid rows in time order, fit the feature transformer, profile train.

The split is by position after ordering by time (never a shuffle when the contract says rows
are time-ordered: a random split would let the model see the future).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.compose import ColumnTransformer

from plumbline.core import skops_compat
from plumbline.core.artifacts import write_json, write_parquet
from plumbline.core.contract import SOURCE_ROW, Contract
from plumbline.core.errors import PlumblineError
from plumbline.model.features import build_transformer, reference_profile
from plumbline.model.settings import FeaturizeConfig


class SplitError(PlumblineError):
    pass


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    order: str


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


def run(
    frame: pd.DataFrame,
    contract: Contract,
    cfg: FeaturizeConfig,
    train_path: Path,
    test_path: Path,
    transformer_path: Path,
    profile_path: Path,
) -> Split:
    split = time_ordered_split(frame, contract, cfg)
    features = contract.feature_columns(cfg.exclude_columns)
    keep = [SOURCE_ROW, *features, contract.target.column]
    schema = contract.arrow_schema()
    part_schema = pa.schema([schema.field(c) for c in keep], metadata=schema.metadata)
    write_parquet(split.train[keep], train_path, part_schema)
    write_parquet(split.test[keep], test_path, part_schema)
    transformer = fit_transformer(split.train, contract, cfg)
    skops_compat.dump(transformer, transformer_path)
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
    write_json(profile, profile_path)
    return split
