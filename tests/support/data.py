"""Small slices of the real bank data, data configs pointing at them, and the ingest stage's
reading and typing of a source in memory."""

from __future__ import annotations

import sqlite3
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from plumbline.core.contract import Contract
from plumbline.core.settings import DataConfig
from plumbline.pipeline import ingest
from support.paths import BANK_CONTRACT, BANK_SMALL


@cache
def _bank_text(rows: int) -> pd.DataFrame:
    return pd.read_csv(BANK_SMALL, sep=";", nrows=rows, dtype=str, keep_default_na=False)


def bank_text(rows: int = 300) -> pd.DataFrame:
    """The first rows of the small bank file as raw text cells (a fresh copy to edit)."""
    return _bank_text(rows).copy()


def data_config(source: dict[str, Any], **extra: Any) -> DataConfig:
    return DataConfig.model_validate({"contract": str(BANK_CONTRACT), "source": source, **extra})


def ingested(data: DataConfig, contract: Contract, root: Path) -> ingest.Ingested:
    """The source ``data`` names (relative to ``root``), read and typed as the ingest stage
    does it, without writing its outputs."""
    return ingest.ingest(ingest.read(data, contract, root), contract, data)


def to_sqlite(frame: pd.DataFrame, path: Path) -> None:
    with sqlite3.connect(path) as conn:
        frame.to_sql("rows", conn, index=False)


def typed(csv: Path) -> pd.DataFrame:
    """The CSV as pandas types it: the same rows as the SQL table and the JSON records."""
    return pd.read_csv(csv, sep=";", keep_default_na=False, na_values=[""])


def with_bad_cells(text: pd.DataFrame) -> pd.DataFrame:
    text.loc[3, "age"] = ""
    text.loc[5, "age"] = "abc"
    text.loc[6, "campaign"] = "2.5"
    text.loc[7, "job"] = "astronaut"
    text.loc[8, "euribor3m"] = "n/a"
    return text
