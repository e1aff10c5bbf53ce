"""``plumbline lineage``: from a prediction back to the data it learned from.

The chain, link by link:

    request id -> model version -> MLflow run -> git commit -> params
               -> dvc.lock hashes of the model, the features, the valid data
               -> raw data content hash and source

A request id is looked up in the prediction log (``serve.prediction_log.dir``), which names the
model version that answered it. Everything else comes from the registry version's tags (written
by ``plumbline promote``), the MLflow run they name and the git repository of the project.
A link that cannot be followed is reported as missing, with the reason.

The last link, ``governance``, comes from the audit trail: who registered the version, who
approved it, rejected it, and who promoted it (or rolled back to it), and when. A version that
was never promoted is not a broken chain: the link says so.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plumbline.core.errors import PlumblineError
from plumbline.governance.trail import AuditTrail
from plumbline.model.runrecord import COMMIT_TAG, MODEL_MD5_TAG
from plumbline.promotion.registry import RAW_CONTENT_TAG, RAW_SOURCE_TAG, RUN_TAG, Registry

LOCK_LINKS = {
    "model": ["models/model.skops"],
    "features": [
        "data/features/train.parquet",
        "data/features/test.parquet",
        "data/features/transformer.skops",
    ],
    "valid data": ["data/interim/valid.parquet"],
}


class LineageIncomplete(PlumblineError):
    """At least one link of the chain is missing; the message names them."""


@dataclass
class Link:
    name: str
    value: Any = None
    missing: str | None = None  # why the link cannot be followed

    @property
    def ok(self) -> bool:
        return self.missing is None


@dataclass
class Chain:
    links: list[Link] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(link.ok for link in self.links)

    @property
    def missing(self) -> list[Link]:
        return [link for link in self.links if not link.ok]

    def to_json(self) -> dict[str, Any]:
        return {"complete": self.complete, "links": [asdict(link) for link in self.links]}

    def text(self) -> str:
        lines = []
        for link in self.links:
            if link.ok:
                value = link.value
                if isinstance(value, dict):
                    shown = ", ".join(f"{k}={v}" for k, v in value.items())
                else:
                    shown = str(value)
                lines.append(f"{link.name:<12} {shown}")
            else:
                lines.append(f"{link.name:<12} MISSING: {link.missing}")
        return "\n".join(lines)


def request_version(log_dir: Path, request_id: str) -> tuple[str, str] | None:
    """(model name, model version) that answered a request, from the prediction log."""
    import pyarrow.compute as pc

    from plumbline.core.predlog import read_log

    table = read_log(log_dir).select(["request_id", "model_name", "model_version"])
    hits = table.filter(pc.equal(table["request_id"], request_id))
    if hits.num_rows == 0:
        return None
    return str(hits["model_name"][0].as_py()), str(hits["model_version"][0].as_py())


def _has_commit(repo: Path, commit: str) -> bool:
    if not repo.is_dir():
        return False
    try:
        known = subprocess.run(
            ["git", "cat-file", "-e", f"{commit}^{{commit}}"],
            cwd=repo,
            capture_output=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return known.returncode == 0


def commit_link(commit: str | None, repos: list[Path]) -> Link:
    """The git commit link: a clean commit that one of ``repos`` holds (the project's
    checkout, or the retrain snapshot repository of a project outside git)."""
    if not commit or commit == "unknown":
        return Link("git commit", missing="the version carries no git commit")
    if commit.endswith("-dirty"):
        return Link(
            "git commit",
            commit,
            missing=f"{commit}: trained from a checkout with uncommitted changes",
        )
    repo = next((r for r in repos if _has_commit(r, commit)), None)
    if repo is None:
        where = ", ".join(str(r) for r in repos)
        return Link("git commit", commit, missing=f"{commit} is in no repository here ({where})")
    refs = subprocess.run(
        ["git", "for-each-ref", "--contains", commit, "--format=%(refname)", "refs/plumbline"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    value: dict[str, Any] = {"sha": commit, "repository": str(repo)}
    if refs:
        value["retrain_ref"] = refs[0]
    return Link("git commit", value)


GOVERNANCE_ACTIONS = (
    "register",
    "approval_requested",
    "approve",
    "reject",
    "approval_expired",
    "promote",
    "rollback",
)


def governance_link(trail: AuditTrail, model: str, version: str) -> Link:
    """Who registered, approved and promoted ``version``, and when (from the audit trail)."""
    records = trail.records(
        actions=GOVERNANCE_ACTIONS, subject_version=version, subject_model=model
    )
    value: dict[str, Any] = {}
    for r in records:
        who = f"{r.actor} ({r.via}) at {r.at}"
        if r.action == "register" and not r.subject.get("challenger_only"):
            value["registered"] = who
        elif r.action == "approval_requested":
            value["approval requested"] = f"{who}, {r.subject.get('required')} approvals required"
        elif r.action in ("approve", "reject"):
            key = "approved" if r.action == "approve" else "rejected"
            value[key] = "; ".join(filter(None, [value.get(key), f"{who}: {r.comment}"]))
        elif r.action == "approval_expired":
            value["approval expired"] = r.at
        elif r.action in ("promote", "rollback"):
            key = "promoted" if r.action == "promote" else "rolled back to"
            step = f"{who} (from {r.subject.get('from') or 'none'})"
            value[key] = "; ".join(filter(None, [value.get(key), step]))
    if "promoted" not in value and "rolled back to" not in value:
        value["promoted"] = "never"
    return Link("governance", value)


def trace_version(registry: Registry, version: str, repos: list[Path]) -> Chain:
    """The chain of a registered version, from the registry, MLflow and git."""
    from mlflow.exceptions import MlflowException

    chain = Chain()
    try:
        found = registry.client.get_model_version(registry.name, version)
    except MlflowException as err:
        chain.links.append(Link("version", missing=f"{registry.name!r} {version}: {err.message}"))
        return chain
    tags = dict(found.tags)
    chain.links.append(
        Link("version", {"name": registry.name, "version": version, "store": registry.uri})
    )
    run_id = tags.get(RUN_TAG) or found.run_id
    run = None
    if not run_id or run_id == "none":
        chain.links.append(Link("mlflow run", missing="the version names no MLflow run"))
    else:
        try:
            run = registry.client.get_run(run_id)
            chain.links.append(Link("mlflow run", {"run_id": run_id, "name": run.info.run_name}))
        except MlflowException:
            chain.links.append(Link("mlflow run", missing=f"run {run_id} is not in the store"))
    commit = tags.get(COMMIT_TAG)
    if run is not None and run.data.tags.get(COMMIT_TAG) not in (None, commit):
        chain.links.append(
            Link(
                "git commit",
                missing=f"the version says {commit}, its MLflow run "
                f"{run.data.tags.get(COMMIT_TAG)}",
            )
        )
    else:
        chain.links.append(commit_link(commit, repos))
    params = {k.removeprefix("param."): v for k, v in tags.items() if k.startswith("param.")}
    if run is not None:
        params = {**dict(run.data.params), **params}
    chain.links.append(
        Link("params", dict(sorted(params.items())))
        if params
        else Link("params", missing="neither the version nor its run records params")
    )
    for name, paths in LOCK_LINKS.items():
        hashes = {p: tags.get(f"dvc.{p}") for p in paths}
        absent = [p for p, h in hashes.items() if not h]
        if absent:
            chain.links.append(Link(name, missing=f"no dvc.lock hash for {', '.join(absent)}"))
        else:
            chain.links.append(Link(name, hashes))
    model_link = next(link for link in chain.links if link.name == "model")
    if model_link.ok and tags.get(MODEL_MD5_TAG) != model_link.value["models/model.skops"]:
        model_link.missing = (
            f"dvc.lock hash {model_link.value['models/model.skops']} is not the registered "
            f"model's MD5 {tags.get(MODEL_MD5_TAG)}"
        )
    raw = tags.get(RAW_CONTENT_TAG)
    source = tags.get(RAW_SOURCE_TAG)
    if raw and source:
        value: dict[str, Any] = {"content_sha256": raw, "source": json.loads(source)}
        if tags.get("dvc.data/raw"):
            value["dvc data/raw"] = tags["dvc.data/raw"]
        chain.links.append(Link("raw data", value))
    else:
        chain.links.append(Link("raw data", missing="no raw data content hash or source"))
    chain.links.append(governance_link(registry.trail, registry.name, version))
    return chain


def trace_request(registry_for: Any, log_dir: Path, request_id: str, repos: list[Path]) -> Chain:
    """The chain of one prediction; ``registry_for(name)`` opens that model's registry."""
    answered = request_version(log_dir, request_id)
    if answered is None:
        return Chain(
            [Link("request", missing=f"request id {request_id!r} is not in the log {log_dir}")]
        )
    name, version = answered
    chain = trace_version(registry_for(name), version, repos)
    chain.links.insert(0, Link("request", {"request_id": request_id, "log": str(log_dir)}))
    return chain
