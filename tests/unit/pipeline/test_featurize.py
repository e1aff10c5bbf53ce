"""Featurize splits in time order, leaves out `duration`, fits the transformer the model will
carry and profiles the training features for drift checks: in memory, and in the files the
stage writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from support.data import data_config, ingested
from support.paths import BANK_SMALL, REPO

from plumbline.core.artifacts import write_parquet
from plumbline.core.contract import SOURCE_ROW, Contract
from plumbline.core.paths import layout
from plumbline.model.artifact import TRUSTED_TYPES
from plumbline.model.settings import FeaturizeConfig
from plumbline.monitoring.settings import load_params
from plumbline.pipeline import featurize
from plumbline.pipeline.featurize import SplitError
from plumbline.pipeline.settings import PipelineParams


@pytest.fixture(scope="module")
def rows(contract: Contract) -> pd.DataFrame:
    """The 4,119-row bank file, ingested (it is clean: every row is valid)."""
    data = data_config({"kind": "csv", "path": str(BANK_SMALL), "sep": ";"})
    return ingested(data, contract, REPO).frame


@pytest.fixture(scope="module")
def repo_cfg() -> FeaturizeConfig:
    return load_params(REPO / "params.yaml").featurize


def run(
    tmp_path: Path, frame: pd.DataFrame, contract: Contract, cfg: FeaturizeConfig
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The featurize stage on ``frame`` as the valid rows of project ``tmp_path``: the splits
    and the profile it wrote."""
    paths = layout(tmp_path)
    write_parquet(frame, paths.valid, contract.arrow_schema())
    params = PipelineParams(data=data_config({"kind": "csv", "path": "x.csv"}), featurize=cfg)
    featurize.run(params, contract, paths)
    return (
        pd.read_parquet(paths.train_split),
        pd.read_parquet(paths.test_split),
        json.loads(paths.reference_profile.read_text()),
    )


def test_featurize_in_memory(
    rows: pd.DataFrame, contract: Contract, repo_cfg: FeaturizeConfig
) -> None:
    out = featurize.featurize(rows, contract, repo_cfg)
    n = len(rows)
    assert (len(out.train), len(out.test)) == (int(0.8 * n), n - int(0.8 * n))
    assert out.train[SOURCE_ROW].max() < out.test[SOURCE_ROW].min()
    features = contract.feature_columns(repo_cfg.exclude_columns)
    assert list(out.train.columns) == list(out.test.columns) == [SOURCE_ROW, *features, "y"]
    assert out.order == out.profile["split_order"] == "source row order"
    assert (out.profile["rows_train"], out.profile["rows_test"]) == (len(out.train), len(out.test))
    assert out.profile["positive_rate_train"] == pytest.approx(
        contract.encode_target(out.train["y"]).mean()
    )
    assert list(out.profile["features"]) == features
    assert list(out.transformer.feature_names_in_) == features
    assert len(out.transformer.transform(out.test[features])) == len(out.test)

    # Fractions below 1 in total leave rows out, between the two splits.
    gap = repo_cfg.model_copy(update={"train_fraction": 0.5, "test_fraction": 0.25})
    out = featurize.featurize(rows, contract, gap)
    assert (len(out.train), len(out.test)) == (int(0.5 * n), int(0.25 * n))
    assert len(out.train) + len(out.test) < n


def test_the_stage_writes_what_featurize_returns(
    tmp_path: Path, rows: pd.DataFrame, contract: Contract, repo_cfg: FeaturizeConfig
) -> None:
    train, test, profile = run(tmp_path, rows, contract, repo_cfg)
    out = featurize.featurize(rows, contract, repo_cfg)
    pd.testing.assert_frame_equal(train, out.train)
    pd.testing.assert_frame_equal(test, out.test)
    assert profile == json.loads(json.dumps(out.profile, default=str))
    written = sio.load(layout(tmp_path).transformer, trusted=TRUSTED_TYPES)
    features = contract.feature_columns(repo_cfg.exclude_columns)
    np.testing.assert_array_equal(
        written.transform(test[features]), out.transformer.transform(out.test[features])
    )


def test_time_ordered_split_with_the_repo_params(
    tmp_path: Path, rows: pd.DataFrame, contract: Contract, repo_cfg: FeaturizeConfig
) -> None:
    # Shuffled input: the split must restore source order, not trust the frame's order.
    shuffled = rows.sample(frac=1.0, random_state=0)
    train, test, profile = run(tmp_path, shuffled, contract, repo_cfg)
    n = len(rows)
    assert (len(train), len(test)) == (int(0.8 * n), n - int(0.8 * n))  # every row used
    assert train[SOURCE_ROW].tolist() == list(range(len(train)))
    assert train[SOURCE_ROW].max() < test[SOURCE_ROW].min()
    assert test[SOURCE_ROW].is_monotonic_increasing
    assert profile["split_order"] == "source row order"
    assert (profile["rows_train"], profile["rows_test"]) == (len(train), len(test))


def test_fractions_leave_a_gap_between_train_and_test(
    tmp_path: Path, rows: pd.DataFrame, contract: Contract
) -> None:
    cfg = FeaturizeConfig(train_fraction=0.6, test_fraction=0.3, exclude_columns=["duration"])
    train, test, _ = run(tmp_path, rows, contract, cfg)
    n = len(rows)
    assert (len(train), len(test)) == (int(0.6 * n), int(0.3 * n))
    assert test[SOURCE_ROW].tolist() == list(range(n - int(0.3 * n), n))  # the latest rows


def test_duration_is_not_a_model_feature(
    tmp_path: Path, rows: pd.DataFrame, contract: Contract, repo_cfg: FeaturizeConfig
) -> None:
    train, _, profile = run(tmp_path, rows, contract, repo_cfg)
    transformer = sio.load(layout(tmp_path).transformer, trusted=TRUSTED_TYPES)
    features = list(transformer.feature_names_in_)
    assert "duration" not in features
    assert features == [c for c in contract.columns if c not in ("duration", "y")]
    assert "duration" not in train.columns and "duration" not in profile["features"]
    out = transformer.transform(train[features])
    onehots = sum(
        len(contract.columns[c].categories or []) for c in contract.categorical_columns(features)
    )
    assert out.shape == (len(train), len(contract.numeric_columns(features)) + onehots)
    assert not np.isnan(out).any()


def test_reference_profile(
    tmp_path: Path, rows: pd.DataFrame, contract: Contract, repo_cfg: FeaturizeConfig
) -> None:
    train, _, profile = run(tmp_path, rows, contract, repo_cfg)
    features = contract.feature_columns(repo_cfg.exclude_columns)
    assert list(profile["features"]) == features
    assert profile["rows"] == len(train)
    for name in features:
        entry = profile["features"][name]
        if contract.columns[name].is_numeric:
            edges, fractions = entry["bin_edges"], entry["bin_fractions"]
            assert len(edges) == len(fractions) + 1 <= repo_cfg.profile_quantiles + 1
            assert np.all(np.diff(edges) > 0)
            assert sum(fractions) == pytest.approx(1.0)
            assert (edges[0], edges[-1]) == (train[name].min(), train[name].max())
            assert entry["mean"] == pytest.approx(train[name].mean())
        else:
            freqs = entry["frequencies"]
            assert list(freqs) == contract.columns[name].categories
            assert sum(freqs.values()) == pytest.approx(1.0)
            observed = train[name].value_counts(normalize=True)
            assert freqs == pytest.approx({c: observed.get(c, 0.0) for c in freqs})
    # age spreads over many values: ten bins of roughly a tenth each.
    age = profile["features"]["age"]
    assert len(age["bin_fractions"]) == 10
    assert max(age["bin_fractions"]) < 0.2


def test_unordered_contract_gives_a_seeded_random_split(
    tmp_path: Path, rows: pd.DataFrame, contract: Contract
) -> None:
    unordered = contract.model_copy(update={"rows_time_ordered": False})
    cfg = FeaturizeConfig(exclude_columns=["duration"], split_seed=7)
    first = featurize.time_ordered_split(rows, unordered, cfg)
    again = featurize.time_ordered_split(rows, unordered, cfg)
    other = featurize.time_ordered_split(rows, unordered, cfg.model_copy(update={"split_seed": 8}))
    assert first.order == "random (seed 7); the contract says rows are not time-ordered"
    assert first.train[SOURCE_ROW].tolist() == again.train[SOURCE_ROW].tolist()
    assert first.train[SOURCE_ROW].tolist() != other.train[SOURCE_ROW].tolist()
    train_rows, test_rows = set(first.train[SOURCE_ROW]), set(first.test[SOURCE_ROW])
    assert not train_rows & test_rows
    assert len(train_rows) + len(test_rows) == len(rows)
    assert first.test[SOURCE_ROW].min() < first.train[SOURCE_ROW].max()  # interleaved


def test_split_needs_both_classes(rows: pd.DataFrame, contract: Contract) -> None:
    with pytest.raises(SplitError, match="only one class of 'y'"):
        featurize.time_ordered_split(rows[rows["y"] == "no"], contract, FeaturizeConfig())
