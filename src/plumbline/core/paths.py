"""Where things live: the project root and the canonical layout that dvc.yaml declares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def project_root() -> Path:
    """The folder holding params.yaml: $PLUMBLINE_ROOT, else the nearest parent of the CWD."""
    env = os.environ.get("PLUMBLINE_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params.yaml").is_file():
            return candidate
    return here


def home_root(root: Path) -> Path:
    """The user's checkout, also when DVC runs a queued experiment in a temporary copy.

    ``dvc queue`` runs experiments in ``<repo>/.dvc/tmp/exps/<tmp>/``; state that must outlive
    the experiment (the embedded MLflow store) belongs to ``<repo>``.
    """
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


@dataclass(frozen=True)
class Layout:
    """Stage inputs and outputs, relative to the project root (the same paths as dvc.yaml)."""

    root: Path

    def __truediv__(self, rel: str) -> Path:
        return self.root / rel

    @property
    def ingested(self) -> Path:
        return self.root / "data/interim/ingested.parquet"

    @property
    def ingest_record(self) -> Path:
        return self.root / "reports/ingest.json"

    @property
    def valid(self) -> Path:
        return self.root / "data/interim/valid.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "data/quarantine/quarantine.parquet"

    @property
    def validation_report(self) -> Path:
        return self.root / "reports/validation.json"

    @property
    def expectation_suite(self) -> Path:
        return self.root / "reports/expectation_suite.json"

    @property
    def data_docs(self) -> Path:
        return self.root / "reports/data_docs"

    @property
    def train_split(self) -> Path:
        return self.root / "data/features/train.parquet"

    @property
    def test_split(self) -> Path:
        return self.root / "data/features/test.parquet"

    @property
    def transformer(self) -> Path:
        return self.root / "data/features/transformer.skops"

    @property
    def reference_profile(self) -> Path:
        return self.root / "data/features/reference_profile.json"

    @property
    def tune_best(self) -> Path:
        """The tune stage's choice, which train reads: the estimator's best hyperparameters."""
        return self.root / "reports/tune/best_params.json"

    @property
    def tune_trials(self) -> Path:
        return self.root / "reports/tune/trials.csv"

    @property
    def model(self) -> Path:
        return self.root / "models/model.skops"

    @property
    def model_metadata(self) -> Path:
        return self.root / "models/model.json"

    @property
    def run_record(self) -> Path:
        """Untracked (gitignored, not a DVC output): the last training run's lineage."""
        return self.root / "models/lineage.json"

    @property
    def metrics(self) -> Path:
        return self.root / "reports/metrics.json"

    @property
    def plots(self) -> Path:
        return self.root / "reports/plots"

    @property
    def figures(self) -> Path:
        return self.root / "reports/figures"


def layout(root: Path | None = None) -> Layout:
    return Layout(root or project_root())
