"""The prediction log's file format, shared by the server that writes it and the monitor
that reads it: file names, the columns and their Arrow types.

A file is written as ``predictions-<UTC start>-<pid>-<n>.parquet.inprogress`` and renamed
without the suffix when finished; readers only ever see finished files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from plumbline.core.contract import Contract
from plumbline.core.errors import MissingInput

PREFIX = "predictions-"
IN_PROGRESS = ".inprogress"
META_COLUMNS = ("request_id", "row", "received_at", "model_name", "model_version")
OUTPUT_COLUMNS = ("probability", "label")
# Who answered (``champion`` / ``challenger``), under which rollout mode, and in shadow mode the
# challenger's version and score of the same row (null otherwise). Files written before these
# columns existed read as arm "champion", rollout "off".
ROLLOUT_COLUMNS = ("arm", "rollout", "shadow_version", "shadow_probability")


def log_schema(contract: Contract, features: Sequence[str]) -> pa.Schema:
    """Meta columns, the features as the contract types them, then the model's outputs."""
    typed = contract.arrow_schema(with_bookkeeping=False)
    fields = [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
    fields += [typed.field(name) for name in features]
    fields += [
        pa.field("probability", pa.float64(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("rollout", pa.string(), nullable=False),
        pa.field("shadow_version", pa.string(), nullable=True),
        pa.field("shadow_probability", pa.float64(), nullable=True),
        # ?explain=K's explanation of the row as JSON; null when none was asked for
        pa.field("explanation", pa.string(), nullable=True),
    ]
    return pa.schema(fields, metadata={"plumbline.contract": contract.name})


def finished_files(directory: Path) -> list[Path]:
    """Finished log files, oldest first (names start with their UTC start time)."""
    return sorted(directory.glob(f"{PREFIX}*.parquet"))


def read_log(directory: Path) -> pa.Table:
    """All finished log files as one table (for tests, drift and feedback jobs)."""
    files = finished_files(directory)
    if not files:
        raise MissingInput(f"no finished prediction log files in {directory}")
    return pa.concat_tables([pq.read_table(f) for f in files])
