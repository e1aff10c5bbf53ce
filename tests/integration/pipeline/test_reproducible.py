"""Git is the source of truth, shown with what a user runs.

One origin repository (this project on the small bank file) runs ``dvc repro`` and commits the
dvc.lock it wrote. Then:

* a fresh ``git clone`` runs ``make`` (pipeline, ``dvc push``, gate, promote): every output
  hash in its dvc.lock equals the origin's (two full runs from one commit, in two places),
  ``git status --porcelain`` is empty, and the champion's recorded commit is HEAD; the
  champion carries the model card (artifact and description) whose numbers are the clone's
  metrics.json and validation.json;
* a second clone pointed at the first one's DVC remote runs ``dvc pull``: ``dvc status`` is
  clean and ``dvc repro`` runs nothing.

``make``'s setup step is satisfied by the interpreter running the tests (its bin directory is
linked as the clone's venv), so the measured part is the pipeline, not a pip install.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from support.modelcard import card_mismatches
from support.params import set_params
from support.paths import REPO
from support.project import commit_all, lock_outs, make_repo, ran_stages, sh

from plumbline.pipeline.model_card import CARD_TAG, MODEL_CARD_FILE
from plumbline.promotion.registry import CHAMPION, Registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("origin") / "plumbline")
    # The default floors are for the full data; the 4,119-row sample's test split is small.
    for key, value in {"min_roc_auc": 0.5, "min_pr_auc": 0.1, "max_brier": 0.5}.items():
        set_params(root, **{f"gate.{key}": value})
    commit_all(root, "gate floors for the small sample")
    sh(root, "dvc", "repro")
    commit_all(root, "dvc.lock as the pipeline wrote it")
    return root


@pytest.fixture(scope="module")
def made(origin: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    """A fresh clone after `make`; returns (clone, make's output, seconds)."""
    base = tmp_path_factory.mktemp("clone")
    clone = base / "plumbline"
    sh(base, "git", "clone", "-q", str(origin), str(clone))
    venv = base / "venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)
    (venv / ".installed").touch()  # newer than the clone's pyproject.toml: setup is done
    started = time.perf_counter()
    output = sh(clone, "make", f"VENV={venv}")
    return clone, output, time.perf_counter() - started


def test_two_full_runs_from_one_commit_give_identical_output_hashes(
    origin: Path, made: tuple[Path, str, float]
) -> None:
    clone, output, seconds = made
    # tune's outputs are small and in git (cache: false): with featurize's outputs rebuilt
    # byte for byte its deps are unchanged, so DVC keeps them instead of running it.
    assert ran_stages(output) == ["ingest", "validate", "featurize", "train", "evaluate"]
    first, second = lock_outs(origin), lock_outs(clone)
    assert len(first) >= 15, sorted(first)
    differ = [f"{p}: {first.get(p)} vs {second.get(p)}" for p in first if first[p] != second.get(p)]
    assert not differ and set(first) == set(second), (
        f"compared {len(first)} outputs ({', '.join(first)}); these differ:\n" + "\n".join(differ)
    )
    metrics = (clone / "reports/metrics.json").read_text()
    assert metrics == (origin / "reports/metrics.json").read_text()
    assert json.loads(metrics)["roc_auc"] > 0.6
    print(f"make in a fresh clone: {seconds:.1f}s; {len(first)} outputs identical")


def test_fresh_clone_and_make_leave_git_clean_and_record_the_true_commit(
    made: tuple[Path, str, float],
) -> None:
    clone, output, _ = made
    assert sh(clone, "git", "status", "--porcelain") == "", output
    head = sh(clone, "git", "rev-parse", "HEAD").strip()
    record = json.loads((clone / "models/lineage.json").read_text())
    assert record["git_commit"] == head
    registry = Registry("plumbline-classifier", f"sqlite:///{clone / 'mlflow.db'}")
    champion = registry.alias_version(CHAMPION)
    assert champion is not None, output
    tags = next(v.tags for v in registry.versions() if v.version == champion)
    assert tags["plumbline.git_commit"] == head
    run = registry.client.get_run(tags["plumbline.mlflow_run_id"])
    assert run.data.tags["plumbline.git_commit"] == head
    assert tags["dvc.models/model.skops"] == lock_outs(clone)["models/model.skops"]
    assert tags["plumbline.raw.content_sha256"]


def test_make_attaches_the_model_card_to_the_champion(made: tuple[Path, str, float]) -> None:
    import mlflow

    clone, output, _ = made
    uri = f"sqlite:///{clone / 'mlflow.db'}"
    registry = Registry("plumbline-classifier", uri)
    champion = registry.alias_version(CHAMPION)
    assert champion is not None, output
    version = registry.client.get_model_version(registry.name, champion)
    card = Path(mlflow.artifacts.download_artifacts(version.tags[CARD_TAG], tracking_uri=uri))
    text = card.read_text()
    assert text.startswith((clone / MODEL_CARD_FILE).read_text())
    assert version.description == text  # short enough to be the whole description
    head = sh(clone, "git", "rev-parse", "HEAD").strip()
    assert f"Registry version: {champion}" in text and f"Commit: `{head}`" in text
    assert f"MLflow run: `{version.run_id}`" in text
    metrics = json.loads((clone / "reports/metrics.json").read_text())
    validation = json.loads((clone / "reports/validation.json").read_text())
    assert card_mismatches(text, metrics, validation) == []
    assert "model card: runs:/" in output  # promote said where it put it


def test_dvc_pull_in_a_second_clone_is_clean_and_repro_runs_nothing(
    made: tuple[Path, str, float], tmp_path: Path
) -> None:
    first, _, _ = made
    second = tmp_path / "second"
    sh(tmp_path, "git", "clone", "-q", str(first), str(second))
    sh(second, "dvc", "remote", "modify", "--local", "local", "url", str(first / ".dvc/remote"))
    sh(second, "dvc", "pull")
    status = sh(second, "dvc", "status")
    assert "up to date" in status and "changed" not in status, status
    again = sh(second, "dvc", "repro")
    assert ran_stages(again) == [], again
    assert sh(second, "git", "status", "--porcelain") == ""


def test_dirty_means_a_tracked_source_differs_not_what_dvc_wrote(tmp_path: Path) -> None:
    from plumbline.core.tracking import git_commit

    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    (repo / "src").mkdir()
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    for rel in ("dvc.lock", "reports/metrics.json", "src/code.py", "params.yaml"):
        (repo / rel).write_text("committed\n")
    sh(repo, "git", "init", "-q")
    head = commit_all(repo, "all")
    assert git_commit(repo) == head
    # What dvc repro rewrites: its lock and the cache: false outputs git tracks.
    (repo / "dvc.lock").write_text("rewritten\n")
    (repo / "reports/metrics.json").write_text("rewritten\n")
    (repo / "untracked.txt").write_text("new\n")
    assert git_commit(repo) == head
    (repo / "params.yaml").write_text("changed\n")
    assert git_commit(repo) == f"{head}-dirty"
    sh(repo, "git", "checkout", "--", "params.yaml")
    (repo / "src/code.py").write_text("changed\n")
    assert git_commit(repo) == f"{head}-dirty"


def test_outside_a_checkout_the_commit_is_the_one_the_image_was_built_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline image has no git history: its build argument names the commit, and a
    checkout's own HEAD always wins over it."""
    from plumbline.core.tracking import IMAGE_COMMIT_ENV, git_commit

    monkeypatch.delenv(IMAGE_COMMIT_ENV, raising=False)
    assert git_commit(tmp_path) is None
    monkeypatch.setenv(IMAGE_COMMIT_ENV, "0123abc")
    assert git_commit(tmp_path) == "0123abc"
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("a\n")
    sh(repo, "git", "init", "-q")
    head = commit_all(repo, "all")
    assert git_commit(repo) == head


def test_commit_link_finds_the_commit_in_the_project_or_the_snapshot_repository(
    tmp_path: Path,
) -> None:
    from plumbline.promotion.lineage import commit_link

    outside = tmp_path / "project-outside-git"
    outside.mkdir()
    snapshot = tmp_path / "state/project-snapshot"
    snapshot.mkdir(parents=True)
    (snapshot / "dvc.yaml").write_text("stages: {}\n")
    sh(snapshot, "git", "init", "-q")
    sha = commit_all(snapshot, "snapshot")
    sh(snapshot, "git", "update-ref", "refs/plumbline/retrains/00001-x", sha)
    found = commit_link(sha, [outside, snapshot])
    assert found.ok and found.value["retrain_ref"] == "refs/plumbline/retrains/00001-x"
    assert found.value["repository"] == str(snapshot)
    assert "in no repository" in (commit_link(sha, [outside]).missing or "")
    assert "uncommitted" in (commit_link(f"{sha}-dirty", [snapshot]).missing or "")
    assert commit_link("unknown", [snapshot]).missing == "the version carries no git commit"
