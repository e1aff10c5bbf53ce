"""The untracked lineage record of a training run: ``models/lineage.json`` (gitignored).

DVC outputs hold only what the commit, the data and the params determine. What one particular
run adds (the git commit it ran at, when, the MLflow run and logged model) is written here by
train and completed by evaluate, which logs the run; the same facts are tags on the MLflow run.
Consumers find the run of the model in the workspace by the model file's MD5: from this record
when it describes that file, else by searching MLflow for a run tagged with it (e.g. after
``dvc pull`` brought a model trained elsewhere).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plumbline.core.paths import Layout
from plumbline.core.tracking import md5_file

log = logging.getLogger(__name__)

MODEL_MD5_TAG = "plumbline.model_md5"
MODEL_URI_TAG = "plumbline.model_uri"
COMMIT_TAG = "plumbline.git_commit"


@dataclass
class RunRecord:
    model_md5: str
    git_commit: str | None
    mlflow_run_id: str | None = None
    mlflow_model_uri: str | None = None
    tracking_uri: str | None = None
    trained_at: str = ""
    # What evaluate logs to the MLflow run beside the test metrics (train itself starts no MLflow).
    train_params: dict[str, Any] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> RunRecord | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        known = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or "model_md5" not in raw:
            return None
        return cls(**{k: v for k, v in raw.items() if k in known})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def current_record(paths: Layout) -> RunRecord | None:
    """The record, if it describes the model file now in the workspace."""
    if not paths.model.is_file():
        return None
    record = RunRecord.read(paths.run_record)
    if record is None or record.model_md5 != md5_file(paths.model):
        return None
    return record


def find_train_run(client: Any, experiment_ids: list[str], model_md5: str) -> Any | None:
    """The newest MLflow run tagged with this model MD5 (an ``mlflow.entities.Run``), or None."""
    runs = client.search_runs(
        experiment_ids=experiment_ids,
        filter_string=f"tags.`{MODEL_MD5_TAG}` = '{model_md5}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None
