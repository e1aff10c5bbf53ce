"""Shared fixtures: the real bank contract and small slices of the real data."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from plumbline.config import DataConfig
from plumbline.contract import Contract, load_contract

REPO = Path(__file__).resolve().parents[1]
BANK_SMALL = REPO / "data/raw/bank-additional.csv"  # 4,119 rows, ';'-separated
BANK_CONTRACT = REPO / "contracts/bank_marketing.yaml"


@pytest.fixture(scope="session")
def contract() -> Contract:
    return load_contract(BANK_CONTRACT)


@cache
def _bank_text(rows: int) -> pd.DataFrame:
    return pd.read_csv(BANK_SMALL, sep=";", nrows=rows, dtype=str, keep_default_na=False)


def bank_text(rows: int = 300) -> pd.DataFrame:
    """The first rows of the small bank file as raw text cells (a fresh copy to edit)."""
    return _bank_text(rows).copy()


def data_config(source: dict[str, Any], **extra: Any) -> DataConfig:
    return DataConfig.model_validate({"contract": str(BANK_CONTRACT), "source": source, **extra})


def run_cli(*args: str, root: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m plumbline ARGS`` with the project root at ``root`` and MLflow kept there."""
    env = dict(
        os.environ, PLUMBLINE_ROOT=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}"
    )
    return subprocess.run(
        [sys.executable, "-m", "plumbline", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
