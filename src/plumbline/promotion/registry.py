"""The MLflow model registry: versions, the ``challenger`` and ``champion`` aliases, history.

* ``promote`` registers the candidate under ``mlflow.model_name`` as a version tagged with its
  provenance (git commit, DVC hashes from dvc.lock, key params, test metrics, gate verdict),
  points ``challenger`` at it, and moves ``champion`` to it only when the gate passed.
* Every registration, gate verdict read by promote, and move of ``champion`` is a record of the
  audit trail (:mod:`plumbline.governance.trail`), with the actor who caused it and its evidence
  (hashes of reports/gate.json, the model card and the dvc.lock entries). The trail is the
  champion history: ``history`` and ``rollback`` read it, and ``rollback`` replays it to find
  the champion before the current one, so it goes back one step per call. The registered-model
  tags ``plumbline.history.<n>`` mirror it for the MLflow UI and are never read.
* With ``promotion.approvals.required`` >= 1 a passing candidate is held as ``challenger``
  (``hold``); :mod:`plumbline.promotion.approvals` opens the request and moves ``champion``.
* ``load_alias_model`` is what serving calls: it resolves ``models:/<name>@<alias>`` and loads
  the sklearn pipeline with the project's skops allow-list, never the list that the model's
  own MLmodel file declares.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from plumbline.core import yamlfile
from plumbline.core.errors import MissingInput, PlumblineError
from plumbline.core.paths import Layout, project_root
from plumbline.core.settings import MlflowConfig, ParamsView, load_view
from plumbline.core.tracking import git_commit, md5_file, pip_requirements, tracking_uri
from plumbline.governance.identity import Actor, local_user
from plumbline.governance.settings import AuditConfig
from plumbline.governance.trail import AuditTrail, Record, champion_history
from plumbline.model.runrecord import (
    COMMIT_TAG,
    MODEL_MD5_TAG,
    MODEL_URI_TAG,
    current_record,
    find_train_run,
)
from plumbline.model.verdict import GATE_FILE, GateResult
from plumbline.promotion.settings import PromotionParams

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_PREFIX = "plumbline.history."
RUN_TAG = "plumbline.mlflow_run_id"
RAW_CONTENT_TAG = "plumbline.raw.content_sha256"
RAW_SOURCE_TAG = "plumbline.raw.source"
VERDICT_TAG = "gate.verdict"


class RegistryError(PlumblineError):
    """The registry cannot do what was asked (no champion, unreachable store, ...)."""


@contextmanager
def _registry_errors(action: str) -> Iterator[None]:
    try:
        yield
    except Exception as err:
        from mlflow.exceptions import MlflowException  # only when something failed

        if isinstance(err, MlflowException):
            raise RegistryError(f"{action}: {err.message}") from None
        raise


def local_actor() -> Actor:
    """Whoever runs code with shell access to the project and named no one: recorded as such
    (as :func:`plumbline.governance.identity.cli_actor` names them without a token)."""
    return Actor(name=f"local:{local_user()}", role="admin", via="local")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


MODEL_CARD = "reports/model_card.md"


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evidence(paths: Layout) -> dict[str, Any]:
    """What a decision was made on: hashes of reports/gate.json, the model card and the
    dvc.lock entries of the data and the model."""
    return {
        "gate_json_sha256": _sha256(paths / GATE_FILE),
        "model_card_sha256": _sha256(paths / MODEL_CARD),
        "dvc_lock": dvc_lock_hashes(paths / "dvc.lock"),
    }


@dataclass
class Event:
    """One move of the ``champion`` alias (or of ``challenger`` alone), from the audit trail."""

    seq: int
    action: Literal["promote", "rollback", "challenger"]  # challenger: champion untouched
    from_version: str | None
    to_version: str
    by: str
    at: str
    reason: str


def champion_lineage(events: list[Event]) -> list[str]:
    """The champions in order, oldest first, with rolled-back ones removed.

    A promotion pushes its version; a rollback returns to an earlier entry and drops the ones
    above it, so the next rollback goes one step further back.
    """
    stack: list[str] = []
    for event in sorted(events, key=lambda e: e.seq):
        if event.action == "promote":
            if not stack or stack[-1] != event.to_version:
                stack.append(event.to_version)
        elif event.action == "rollback":
            while stack and stack[-1] != event.to_version:
                stack.pop()
            if not stack:
                stack.append(event.to_version)
    return stack


@dataclass
class VersionRow:
    version: str
    aliases: list[str]
    created: str
    tags: dict[str, str]


def event_of(record: Record) -> Event:
    subject = record.subject
    action: Literal["promote", "rollback", "challenger"] = (
        "challenger" if record.action == "register" else record.action  # type: ignore[assignment]
    )
    return Event(
        seq=record.seq,
        action=action,
        from_version=subject.get("from"),
        to_version=str(subject.get("to") or subject.get("version")),
        by=record.actor,
        at=record.at,
        reason=record.comment,
    )


@dataclass
class Promotion:
    version: str
    reused: bool
    passed: bool
    champion_before: str | None
    champion_after: str | None
    held: bool = False  # passed, but ``champion`` waits for approvals

    @property
    def champion_moved(self) -> bool:
        return self.champion_before != self.champion_after


class Registry:
    """One registered model (``name``) in one MLflow store (``uri``)."""

    def __init__(self, name: str, uri: str, trail: AuditTrail | None = None) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        self.name = name
        self.uri = uri
        self.client: MlflowClient = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self._trail = trail
        self._audit: tuple[AuditConfig, Path] | None = None

    @classmethod
    def from_params(
        cls, params: PromotionParams, root: Path, trail: AuditTrail | None = None
    ) -> Registry:
        registry = cls(params.mlflow.model_name, tracking_uri(params.mlflow, root), trail)
        registry._audit = (params.audit, root)
        return registry

    @property
    def trail(self) -> AuditTrail:
        """The project's audit trail, opened on first use (commands that only read the
        registry, such as the gate, never create it)."""
        if self._trail is None:
            if self._audit is None:
                root = project_root()
                params_file = root / "params.yaml"
                audit = (
                    load_view(PromotionParams, params_file).audit
                    if params_file.is_file()
                    else AuditConfig()
                )
                self._audit = (audit, root)
            self._trail = AuditTrail.for_project(*self._audit)
        return self._trail

    # --- reading -------------------------------------------------------------------------

    def exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise RegistryError(
                f"cannot read registered model {self.name!r}: {err.message}"
            ) from None
        return True

    def aliases(self) -> dict[str, str]:
        if not self.exists():
            return {}
        with _registry_errors(f"cannot read registered model {self.name!r}"):
            model = self.client.get_registered_model(self.name)
        return {alias: str(version) for alias, version in model.aliases.items()}

    def alias_version(self, alias: str) -> str | None:
        return self.aliases().get(alias)

    def versions(self) -> list[VersionRow]:
        """All versions, newest first, with their aliases and tags."""
        if not self.exists():
            return []
        by_version: dict[str, list[str]] = {}
        for alias, version in sorted(self.aliases().items()):
            by_version.setdefault(version, []).append(alias)
        quoted = self.name.replace("'", "\\'")
        with _registry_errors(f"cannot list versions of {self.name!r}"):
            found = self.client.search_model_versions(f"name = '{quoted}'")
        rows = [
            VersionRow(
                version=str(v.version),
                aliases=by_version.get(str(v.version), []),
                created=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime(
                    "%Y-%m-%d %H:%M"
                ),
                tags=dict(v.tags),
            )
            for v in found
        ]
        return sorted(rows, key=lambda r: int(r.version), reverse=True)

    def history(self) -> list[Event]:
        """Moves of ``champion`` (and challenger-only registrations), oldest first, from the
        audit trail; the MLflow tags are not read."""
        records = list(champion_history(self.trail, self.name))
        records += [
            r
            for r in self.trail.records(actions=["register"], subject_model=self.name)
            if r.subject.get("challenger_only")
        ]
        return [event_of(r) for r in sorted(records, key=lambda r: r.seq)]

    def load(self, version: str) -> Pipeline:
        """Download one version's artifacts and load its pipeline with our skops allow-list."""
        import mlflow

        from plumbline.model.artifact import ModelLoadError, load_model

        with tempfile.TemporaryDirectory(prefix="plumbline-model-") as tmp:
            with _registry_errors(f"cannot download {self.name!r} version {version}"):
                # Resolve the version's artifact location through our own client: a
                # "models:/" URI would be resolved through MLflow's global registry URI,
                # whatever store this Registry was opened on.
                location = self.client.get_model_version_download_uri(self.name, version)
                local = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=location,
                        dst_path=tmp,
                        tracking_uri=self.uri,
                    )
                )
            mlmodel = local / "MLmodel"
            if not mlmodel.is_file():
                raise ModelLoadError(f"{self.name!r} version {version} has no MLmodel file")
            flavor = (yamlfile.safe_load(mlmodel.read_text()).get("flavors") or {}).get("sklearn")
            if not flavor or flavor.get("serialization_format") != "skops":
                raise ModelLoadError(
                    f"{self.name!r} version {version} is not a skops-serialized sklearn model; "
                    "refusing to unpickle it"
                )
            return load_model(local / flavor.get("pickled_model", "model.skops"))

    # --- writing -------------------------------------------------------------------------

    def _mirror(self, event: Event) -> None:
        """The MLflow UI's copy of a history record: written, never read."""
        try:
            with _registry_errors("cannot mirror the history to MLflow"):
                self.client.set_registered_model_tag(
                    self.name, f"{HISTORY_PREFIX}{event.seq:06d}", json.dumps(asdict(event))
                )
        except RegistryError as err:
            log.warning("history record %d: %s", event.seq, err)

    def record(
        self,
        action: str,
        actor: Actor,
        subject: dict[str, Any],
        evidence: dict[str, Any] | None = None,
        comment: str = "",
    ) -> Record:
        """Append one record about this model to the audit trail."""
        return self.trail.append(
            action, actor, {"model": self.name, **subject}, evidence or {}, comment
        )

    def set_champion(
        self,
        version: str,
        action: Literal["promote", "rollback"],
        reason: str,
        actor: Actor | None = None,
        evidence: dict[str, Any] | None = None,
        subject: dict[str, Any] | None = None,
    ) -> Event:
        before = self.alias_version(CHAMPION)
        with _registry_errors(f"cannot move {CHAMPION!r} to version {version}"):
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
        record = self.record(
            action,
            actor or local_actor(),
            {
                "version": version,
                "alias": CHAMPION,
                "from": before,
                "to": version,
                **(subject or {}),
            },
            evidence,
            reason,
        )
        event = event_of(record)
        self._mirror(event)
        return event

    def rollback(self, reason: str = "manual rollback", actor: Actor | None = None) -> Event:
        """Move ``champion`` back to the champion before the current one."""
        current = self.alias_version(CHAMPION)
        if current is None:
            raise RegistryError(
                f"registered model {self.name!r} has no {CHAMPION!r} to roll back from"
            )
        lineage = champion_lineage(self.history())
        if not lineage or lineage[-1] != current:
            lineage.append(current)  # the alias was moved outside plumbline: count that too
        if len(lineage) < 2:
            raise RegistryError(
                f"version {current} is the first champion of {self.name!r} on "
                "record; there is no earlier champion to roll back to"
            )
        return self.set_champion(lineage[-2], "rollback", reason, actor)

    def _ensure_registered_model(self) -> None:
        if not self.exists():
            with _registry_errors(f"cannot create registered model {self.name!r}"):
                self.client.create_registered_model(
                    self.name, description="Plumbline classifier; see `plumbline models`."
                )

    def train_run(self, paths: Layout, params: PromotionParams) -> Any | None:
        """The MLflow run that trained models/model.skops, if this store has it: the one the
        lineage record names, else the newest run tagged with the model's MD5."""
        from mlflow.exceptions import MlflowException

        record = current_record(paths)
        if record is not None and record.mlflow_run_id:
            try:
                return self.client.get_run(record.mlflow_run_id)
            except MlflowException:
                pass  # trained against another store
        experiment = self.client.get_experiment_by_name(params.mlflow.experiment)
        if experiment is None:
            return None
        with _registry_errors("cannot search the training runs"):
            return find_train_run(self.client, [experiment.experiment_id], md5_file(paths.model))

    def _logged_model(self, run: Any) -> tuple[str, str, str] | None:
        """(source, run_id, model_id) of the model that train logged in this run."""
        from mlflow.exceptions import MlflowException

        uri = run.data.tags.get(MODEL_URI_TAG) if run is not None else None
        if not uri or not uri.startswith("models:/m-"):
            return None
        model_id = uri.removeprefix("models:/")
        try:
            logged = self.client.get_logged_model(model_id)
        except MlflowException:
            return None
        return uri, logged.source_run_id or "", model_id

    def _log_artifact(self, paths: Layout, params: PromotionParams) -> tuple[str, str, str]:
        """Log models/model.skops to a new run when train did not log it to this store."""
        from plumbline.core.tracking import configure
        from plumbline.model.artifact import TRUSTED_TYPES, load_model
        from plumbline.model.boosting import requirements

        mlflow = configure(params.mlflow, paths.root)
        model = load_model(paths.model)
        with mlflow.start_run(run_name="register-model-artifact") as run:
            mlflow.set_tag("plumbline.source", str(paths.model))
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format="skops",
                skops_trusted_types=TRUSTED_TYPES,
                pip_requirements=pip_requirements(requirements(model)),
            )
        return info.model_uri, run.info.run_id, info.model_id

    def promote(
        self,
        params: PromotionParams,
        paths: Layout,
        gate: GateResult,
        challenger_only: bool = False,
        actor: Actor | None = None,
        hold: bool = False,
    ) -> Promotion:
        """Register the candidate (or find it already registered) and move the aliases;
        ``challenger_only``: point ``challenger`` at it and leave ``champion`` where it is (to
        roll it out beside the champion), recorded in the history; ``hold``: a passing
        candidate waits as ``challenger`` for approvals instead of becoming champion."""
        actor = actor or local_actor()
        if not paths.model.is_file():
            raise MissingInput(f"{paths.model} not found: run `dvc repro` first")
        model_md5 = md5_file(paths.model)
        if gate.candidate.get("model_md5") != model_md5:
            raise RegistryError(
                f"reports/gate.json was written for another model than "
                f"{paths.model}: run `plumbline gate` again"
            )
        if gate.model_name != self.name:
            raise RegistryError(
                f"reports/gate.json judged registered model {gate.model_name!r}, "
                f"not {self.name!r}: run `plumbline gate` again"
            )
        before = self.alias_version(CHAMPION)
        if gate.champion_version != before:
            raise RegistryError(
                f"the champion moved since the gate ran (gate compared with "
                f"{gate.champion_version or 'no champion'}, now {before or 'none'}): run "
                "`plumbline gate` again"
            )
        run = self.train_run(paths, params)
        tags = version_tags(params, paths, gate, model_md5, run, actor.name)
        proof = evidence(paths)
        self._ensure_registered_model()
        existing = [v for v in self.versions() if v.tags.get(MODEL_MD5_TAG) == model_md5]
        if existing:
            # The tags keep the verdict the version was registered with; the latest gate on the
            # same artifact is added beside it.
            version = existing[0].version
            latest = {
                "gate.last_verdict": tags[VERDICT_TAG],
                "gate.last_reasons": tags["gate.reasons"],
                "gate.last_at": tags["gate.at"],
            }
            with _registry_errors(f"cannot tag version {version}"):
                for key, value in latest.items():
                    self.client.set_model_version_tag(self.name, version, key, value)
        else:
            logged = self._logged_model(run) or self._log_artifact(paths, params)
            source, run_id, model_id = logged
            with _registry_errors(f"cannot register a version of {self.name!r}"):
                created = self.client.create_model_version(
                    self.name, source=source, run_id=run_id or None, tags=tags, model_id=model_id
                )
            version = str(created.version)
            self.record(
                "register",
                actor,
                {"version": version, "model_md5": model_md5, "run_id": run_id or None},
                proof,
                f"registered version {version}",
            )
        self.record(
            "gate",
            actor,
            {
                "version": version,
                "passed": gate.passed,
                "champion_version": gate.champion_version,
                "gate_at": gate.created_at,
            },
            proof,
            gate.summary(),
        )
        previous_challenger = self.alias_version(CHALLENGER)
        with _registry_errors(f"cannot set alias {CHALLENGER!r}"):
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        held = False
        if challenger_only:
            record = self.record(
                "register",
                actor,
                {
                    "version": version,
                    "alias": CHALLENGER,
                    "from": previous_challenger,
                    "to": version,
                    "challenger_only": True,
                },
                proof,
                f"challenger only (champion stays {before or 'unset'}); gate "
                f"{'passed' if gate.passed else 'failed'}: {gate.note}",
            )
            self._mirror(event_of(record))
        elif gate.passed and before != version:
            if hold:
                held = True
            else:
                checks = len(gate.checks)
                why = f"gate passed {checks} of {checks} checks; {gate.note}"
                self.set_champion(version, "promote", why, actor, proof)
        return Promotion(
            version=version,
            reused=bool(existing),
            passed=gate.passed,
            champion_before=before,
            champion_after=self.alias_version(CHAMPION),
            held=held,
        )

    def drop_challenger(self, version: str) -> bool:
        """Remove ``challenger`` if it points at ``version``; whether it did."""
        if self.alias_version(CHALLENGER) != version:
            return False
        with _registry_errors(f"cannot remove alias {CHALLENGER!r}"):
            self.client.delete_registered_model_alias(self.name, CHALLENGER)
        return True


# --- provenance tags ------------------------------------------------------------------------


def dvc_lock_hashes(lock: Path) -> dict[str, str]:
    """MD5 of every data and model path recorded in dvc.lock (deps and outs of all stages)."""
    if not lock.is_file():
        return {}
    data = yamlfile.safe_load(lock.read_text()) or {}
    hashes: dict[str, str] = {}
    for stage in (data.get("stages") or {}).values():
        for entry in [*(stage.get("deps") or []), *(stage.get("outs") or [])]:
            path, md5 = entry.get("path"), entry.get("md5")
            if path and md5 and str(path).startswith(("data/", "models/")):
                hashes[str(path)] = str(md5)
    return dict(sorted(hashes.items()))


def key_params(params: PromotionParams) -> dict[str, str]:
    train = params.train
    estimator = getattr(train, train.estimator).model_dump(mode="json")
    out: dict[str, Any] = {
        "train.estimator": train.estimator,
        "train.seed": train.seed,
        **{f"train.{train.estimator}.{k}": v for k, v in estimator.items()},
        "featurize.exclude_columns": ",".join(params.featurize.exclude_columns),
        "featurize.train_fraction": params.featurize.train_fraction,
        "featurize.test_fraction": params.featurize.test_fraction,
        "evaluate.threshold": params.evaluate.threshold,
    }
    return {k: "null" if v is None else str(v) for k, v in out.items()}


def raw_data_tags(paths: Layout) -> dict[str, str]:
    """The raw data's content hash and source, from the ingest record."""
    if not paths.ingest_record.is_file():
        return {}
    record = json.loads(paths.ingest_record.read_text())
    out = {RAW_CONTENT_TAG: str(record.get("content_sha256") or "")}
    if record.get("source_sha256"):
        out["plumbline.raw.source_sha256"] = str(record["source_sha256"])
    source = record.get("source") or {}
    out[RAW_SOURCE_TAG] = json.dumps(source, sort_keys=True)[:4000]
    return {k: v for k, v in out.items() if v}


def version_tags(
    params: PromotionParams,
    paths: Layout,
    gate: GateResult,
    model_md5: str,
    run: Any | None = None,
    by: str | None = None,
) -> dict[str, str]:
    """A version's provenance. The commit is the one the model was trained at (the training
    run's tag), not whatever is checked out when promote runs."""
    metrics = gate.candidate.get("metrics") or {}
    lock = dvc_lock_hashes(paths / "dvc.lock")
    if lock.get("models/model.skops") not in (None, model_md5):
        log.warning(
            "models/model.skops differs from the one recorded in dvc.lock; "
            "run `dvc repro` so the registered model is the one DVC tracks"
        )
    tags: dict[str, str] = {
        MODEL_MD5_TAG: model_md5,
        COMMIT_TAG: (run.data.tags.get(COMMIT_TAG) if run is not None else None)
        or git_commit(paths.root)
        or "unknown",
        RUN_TAG: run.info.run_id if run is not None else "none",
        "plumbline.estimator": params.train.estimator,
        "plumbline.registered_by": by or local_actor().name,
        "plumbline.registered_at": _now(),
        VERDICT_TAG: "passed" if gate.passed else "failed",
        "gate.reasons": " | ".join(gate.reasons),
        "gate.champion_version": gate.champion_version or "none",
        "gate.at": gate.created_at,
        **{f"dvc.{path}": md5 for path, md5 in lock.items()},
        **raw_data_tags(paths),
        **{f"param.{k}": v for k, v in key_params(params).items()},
        **{
            f"metric.{k}": f"{float(v):.6g}"
            for k, v in metrics.items()
            if isinstance(v, int | float)
        },
    }
    return tags


# --- the loader serving calls ---------------------------------------------------------------


def _default_mlflow_config() -> tuple[MlflowConfig, Path]:
    root = project_root()
    params_file = root / "params.yaml"
    cfg = load_view(ParamsView, params_file).mlflow if params_file.is_file() else MlflowConfig()
    return cfg, root


def load_alias_model(name: str, alias: str = "champion") -> tuple[str, Pipeline]:
    """Resolve ``models:/<name>@<alias>`` and load that version's sklearn pipeline safely.

    The store is ``MLFLOW_TRACKING_URI`` if set, else ``mlflow.tracking_uri`` from params.yaml,
    else the project's SQLite store. Returns (version, pipeline). The pipeline is loaded with
    skops and the project's allow-list of types (:data:`plumbline.model.artifact.TRUSTED_TYPES`);
    anything else in the file is refused with :class:`plumbline.model.artifact.ModelLoadError`.
    """
    cfg, root = _default_mlflow_config()
    registry = Registry(name, tracking_uri(cfg, root))
    version = registry.alias_version(alias)
    if version is None:
        raise RegistryError(
            f"no version of registered model {name!r} has the alias {alias!r} in {registry.uri}"
        )
    return version, registry.load(version)


# --- the listing ------------------------------------------------------------------------


def versions_table(rows: list[VersionRow]) -> str:
    """A plain-text table: one line per version, newest first."""
    header = [
        "version",
        "aliases",
        "created (UTC)",
        "estimator",
        "roc_auc",
        "pr_auc",
        "brier",
        "gate",
        "commit",
    ]
    lines = [header]
    for r in rows:
        t = r.tags
        commit = t.get("plumbline.git_commit", "")
        lines.append(
            [
                r.version,
                ",".join(r.aliases) or "-",
                r.created,
                t.get("plumbline.estimator", "-"),
                t.get("metric.roc_auc", "-"),
                t.get("metric.pr_auc", "-"),
                t.get("metric.brier", "-"),
                t.get(VERDICT_TAG, "-"),
                (commit[:8] + ("-dirty" if commit.endswith("-dirty") else "")) if commit else "-",
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def history_lines(events: list[Event], last: int = 10) -> list[str]:
    return [
        f"{e.at}  {e.action:<8}  {e.from_version or '-'} -> {e.to_version}  by {e.by}: {e.reason}"
        for e in events[-last:]
    ]
