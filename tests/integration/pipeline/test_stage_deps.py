"""The params half of the stage dependency check, from a real run of every stage.

Each stage's runner (``plumbline.pipeline.<stage>.run``, all that its CLI command calls) runs
in-process on the small bank file in a throwaway project, with the pipeline's validated params
wrapped in a recorder that logs every ``section.key`` the stage reads (a whole section when the
stage dumps it, e.g. to log it to MLflow). That set must equal the params dvc.yaml declares for
the stage, expanded to ``section.key``. ``data.contract`` is read by the CLI for every stage (to
load the contract it passes the runner) and is declared as the templated file dep
``${data.contract}``, so a change of it reruns every stage either way.

Then what a user sees, from those outputs (recorded with ``dvc commit``): changing
``featurize.profile_quantiles`` reruns train, and the model card's score profile has the new
number of bins.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from support.params import set_params
from support.paths import REPO
from support.project import STAGES, make_repo, ran_stages, sh

from plumbline.core import yamlfile
from plumbline.core.contract import load_contract
from plumbline.core.paths import layout
from plumbline.pipeline.settings import PipelineParams, load_pipeline_params

pytestmark = pytest.mark.slow


class Recorder:
    """Stands in for the params object; records ``section.key`` on every read."""

    def __init__(self, target: Any, path: str, seen: set[str]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_seen", seen)

    def __getattr__(self, name: str) -> Any:
        target, path, seen = self._target, self._path, self._seen
        value = getattr(target, name)
        if name.startswith("model_dump"):
            seen.add(path or "*")  # the whole node
            return value
        if name.startswith("model_") or (callable(value) and not isinstance(value, BaseModel)):
            return value  # methods (resolve, ...) and pydantic machinery read nothing
        key = "validate" if name == "validate_" else name
        child = f"{path}.{key}" if path else key
        if path:
            seen.add(child)
            return value
        return Recorder(value, child, seen)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the config is frozen")


def declared_params(stage: str, params: PipelineParams) -> set[str]:
    spec = yamlfile.safe_load((REPO / "dvc.yaml").read_text())
    out: set[str] = set()
    for entry in spec["stages"][stage].get("params") or []:
        assert isinstance(entry, str), f"{stage}: params from another file: {entry}"
        section, _, key = entry.partition(".")
        if key:
            out.add(f"{section}.{key.split('.')[0]}")
        else:
            model = getattr(params, "validate_" if section == "validate" else section)
            out |= {f"{section}.{name}" for name in type(model).model_fields}
    return out


def expand(seen: set[str], params: PipelineParams) -> set[str]:
    out: set[str] = set()
    for entry in seen:
        if "." in entry:
            out.add(entry)
        else:  # a dumped section
            model = getattr(params, "validate_" if entry == "validate" else entry)
            out |= {f"{entry}.{name}" for name in type(model).model_fields}
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("deps") / "plumbline")


@pytest.fixture(scope="module")
def stage_reads(project: Path) -> dict[str, set[str]]:
    """Every stage's runner run in ``project`` (outputs and MLflow run included), with the
    ``section.key`` names each one read."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("PLUMBLINE_ROOT", str(project))
        monkeypatch.chdir(project)
        reads: dict[str, set[str]] = {stage: set() for stage in STAGES}
        # ingest reads data.resample_seed only when it resamples: run that branch too (first,
        # so that the plain run below leaves the project's real outputs).
        runs = [("ingest", {"resample_rows": 500}), *((stage, {}) for stage in STAGES)]
        for stage, data_override in runs:
            # MLflow exports the store's URI to the environment once a stage has configured
            # it; separate `plumbline` processes do not inherit that, so neither may this one.
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
            # What the stage's command does: load the params and the contract, run the stage.
            real = load_pipeline_params(project / "params.yaml")
            contract = load_contract(real.resolve(real.data.contract))
            if data_override:
                real = real.model_copy(update={"data": real.data.model_copy(update=data_override)})
            runner = importlib.import_module(f"plumbline.pipeline.{stage}").run
            runner(Recorder(real, "", reads[stage]), contract, layout(project))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return reads


def test_each_stage_reads_exactly_the_params_dvc_yaml_declares(
    project: Path, stage_reads: dict[str, set[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLUMBLINE_ROOT", str(project))
    monkeypatch.chdir(project)
    mismatches = []
    for stage in STAGES:
        real = load_pipeline_params(project / "params.yaml")
        read, declared = expand(stage_reads[stage], real), declared_params(stage, real)
        if read != declared:
            mismatches.append(
                f"{stage}: reads but does not declare {sorted(read - declared)}; "
                f"declares but does not read {sorted(declared - read)}"
            )
    assert not mismatches, "dvc.yaml params differ from what the stages read:\n" + "\n".join(
        mismatches
    )
    assert (project / "models/lineage.json").is_file()  # it was a real run, MLflow included


def test_editing_serving_or_monitoring_settings_leaves_the_pipeline_up_to_date(
    project: Path, stage_reads: dict[str, set[str]]
) -> None:
    """Settings per consumer: no stage reads these values or imports their models' code."""
    sh(project, "dvc", "commit", "--force")
    assert sh(project, "dvc", "status").strip().endswith("up to date.")
    set_params(
        project,
        **{
            "gate.min_roc_auc": 0.6,
            "serve.threshold": 0.4,
            "serve.rollout.mode": "shadow",
            "monitor.interval_s": 5.0,
            "retrain.cooldown_s": 60.0,
            "retrain.comparison.seed": 7,
        },
    )
    for consumer in ("promotion", "serving", "monitoring"):
        settings = project / "src/plumbline" / consumer / "settings.py"
        settings.write_text(settings.read_text() + "\n# a new setting's model goes here\n")
    status = sh(project, "dvc", "status")
    assert status.strip().endswith("up to date."), status
    # The pipeline's own settings code is a dep of the stages that read their settings through
    # it; ingest reads only the shared `data` section, whose model is in core.
    pipeline_settings = project / "src/plumbline/pipeline/settings.py"
    pipeline_settings.write_text(pipeline_settings.read_text() + "\n# changed\n")
    status = sh(project, "dvc", "status")
    for stage in ("validate", "featurize", "tune", "train", "evaluate"):
        assert f"{stage}:" in status, status
    assert "ingest:" not in status, status
    sh(project, "git", "checkout", "--", "src", "params.yaml")


def test_profile_quantiles_change_reruns_train_and_changes_the_score_profile(
    project: Path, stage_reads: dict[str, set[str]]
) -> None:
    # The in-process run's outputs are the stages' outputs: DVC records them as they are (a
    # cold `dvc repro` running every stage is test_dvc_pipeline.py's).
    sh(project, "dvc", "commit", "--force")
    assert sh(project, "dvc", "status").strip().endswith("up to date.")
    card = json.loads((project / "models/model.json").read_text())
    assert len(card["score_profile"]["bin_fractions"]) == 10

    set_params(project, **{"featurize.profile_quantiles": 4})
    second = sh(project, "dvc", "repro")
    assert "train" in ran_stages(second), second
    card = json.loads((project / "models/model.json").read_text())
    assert len(card["score_profile"]["bin_fractions"]) == 4
    assert sh(project, "dvc", "status").strip().endswith("up to date.")
