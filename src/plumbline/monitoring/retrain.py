"""Retraining: the real pipeline, through DVC, on a window with the newest labelled data.

A run builds its training window (:func:`build_window`: the newest rows of the project's
validated history followed by the newest labelled live rows, policy ``retrain.window``) and
commits it, as ``data/raw/retrain-window.csv`` with the params and contract that read it, in
an isolated workspace cloned from the project's git history (or from a snapshot repository when
the project is not in git, as in the compose stack; see
:mod:`plumbline.monitoring.workspace`). The only params that differ from the project's are the
data source, the contract (columns the server does not log may be empty),
``validate.check_duplicates`` (off: live rows are unique by request id) and, if set,
``retrain.gate``. There it runs ``dvc repro`` (the project's dvc.yaml, the workspace's
committed code), then ``plumbline gate`` and ``plumbline promote`` against the same MLflow
registry that the server polls, so a retrained version has the lineage of a manual one: a clean
commit, its params, the dvc.lock hashes and an MLflow run. The input commit, with dvc.lock on
top, is kept as ``refs/plumbline/retrains/<run>``. The promote step runs in this process as the
actor ``monitor`` (via ``system``) and records into the project's audit trail; it moves
``champion`` only when the gate passed, so a rejected or failed retrain leaves the champion in
place. With ``promotion.approvals.required`` >= 1 a passing candidate waits as ``challenger``
for approvals instead (status ``pending_approval``). The project's own files are never written.

One retrain at a time, across processes: a run holds an exclusive ``flock`` on
``<state_dir>/retrain.lock`` from its checks to its end; a concurrent request is refused as
``busy``. Every run (promoted / pending_approval / rejected / failed) is recorded in the
monitor's store.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from plumbline.core import yamlfile
from plumbline.core.contract import SOURCE_ROW, Contract
from plumbline.core.errors import PlumblineError
from plumbline.core.paths import Layout, layout
from plumbline.monitoring.references import References
from plumbline.monitoring.settings import Params
from plumbline.monitoring.store import MonitorStore
from plumbline.monitoring.workspace import Workspace, WorkspaceError

if TYPE_CHECKING:
    from plumbline.governance.trail import AuditTrail
    from plumbline.model.verdict import GateResult
    from plumbline.promotion.approvals import Pending
    from plumbline.promotion.registry import Promotion, Registry

log = logging.getLogger("plumbline.retrain")

# The window and its contract, committed in the retrain workspace (relative to its root).
WINDOW_SOURCE = "data/raw/retrain-window.csv"
WINDOW_CONTRACT = "contracts/retrain-window.yaml"
DVC = [sys.executable, "-m", "dvc"]
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


class RetrainError(PlumblineError):
    """A retrain could not be run or did not finish; the champion is unchanged."""


class RetrainLock:
    """An exclusive, non-blocking ``flock``: held by one process (and thread) at a time, and
    released by the kernel if the holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


@dataclass
class Window:
    frame: pd.DataFrame
    history_rows: int
    live_rows: int
    live_train_rows: int
    newest_live_at: float | None
    positive_rate_live: float


@dataclass
class Decision:
    """The answer to a retrain request."""

    outcome: str  # started | busy | cooldown | not_enough_labels | disabled
    reason: str
    run_id: int | None = None


@dataclass
class RunResult:
    run_id: int
    status: str  # promoted | pending_approval | rejected | failed
    reason: str
    version: str | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    workdir: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def _target_values(contract: Contract) -> tuple[Any, Any]:
    """(negative, positive) target values as the source writes them."""
    spec = contract.columns[contract.target.column]
    positive = contract.target.positive
    if spec.type == "category":
        others = [c for c in spec.categories or [] if c != str(positive)]
        if len(others) != 1:
            raise RetrainError(
                f"target {contract.target.column!r} has categories "
                f"{spec.categories}; outcomes 0/1 map only onto two"
            )
        return others[0], str(positive)
    if isinstance(positive, bool):
        return (not positive), positive
    if positive == 1:
        return 0, 1
    raise RetrainError(
        f"cannot write outcome 0 for target {contract.target.column!r} "
        f"(positive value {positive!r})"
    )


def build_window(params: Params, contract: Contract, paths: Layout, store: MonitorStore) -> Window:
    """The newest history rows, then the newest labelled live rows, in time order."""
    cfg = params.retrain.window
    features = contract.feature_columns(params.featurize.exclude_columns)
    target = contract.target.column
    live = store.labelled(cfg.live_rows)
    if len(live) < cfg.min_live_rows:
        raise RetrainError(
            f"{len(live)} labelled live rows; retrain.window.min_live_rows is {cfg.min_live_rows}"
        )
    negative, positive = _target_values(contract)
    live_part = live[features].copy()
    live_part[target] = np.where(live["outcome"].to_numpy() == 1, positive, negative)
    history_cap = min(cfg.history_rows, math.floor(cfg.max_history_per_live * len(live)))
    history_part = pd.DataFrame(columns=[*contract.columns])
    if history_cap > 0:
        if not paths.valid.is_file():
            raise RetrainError(
                f"{paths.valid} not found: the history part of the window comes "
                "from the project's validated data (run `dvc repro` or "
                "`dvc pull`), or set retrain.window.history_rows to 0"
            )
        history = pd.read_parquet(paths.valid)
        order = [contract.time_column, SOURCE_ROW] if contract.time_column else [SOURCE_ROW]
        history = history.sort_values([c for c in order if c in history.columns], kind="stable")
        history_part = history[[*contract.columns]].tail(history_cap)
    frame = pd.concat([history_part, live_part], ignore_index=True)[[*contract.columns]]
    n_train = math.floor(params.featurize.train_fraction * len(frame))
    live_train = n_train - len(history_part)
    if live_train <= 0:
        raise RetrainError(
            f"the window's training split ({n_train} of {len(frame)} rows) would hold no live "
            f"rows ({len(history_part)} history rows come first); lower "
            "retrain.window.max_history_per_live or history_rows"
        )
    return Window(
        frame=frame,
        history_rows=len(history_part),
        live_rows=len(live_part),
        live_train_rows=live_train,
        newest_live_at=float(live["received_at"].max()),
        positive_rate_live=float((live["outcome"] == 1).mean()),
    )


def window_contract(raw: dict[str, Any], features: list[str], target: str) -> dict[str, Any]:
    """The project's contract for the window file: columns the server does not log (excluded
    features, text columns) may be empty, and rows are already in time order."""
    out = dict(raw)
    columns = {}
    for name, spec in (raw.get("columns") or {}).items():
        spec = dict(spec)
        if name not in features and name != target:
            spec["nullable"] = True
        columns[name] = spec
    out["columns"] = columns
    out["time_column"] = None
    out["rows_time_ordered"] = True
    return out


def write_window(window: Window, contract: Contract, path: Path) -> None:
    frame = window.frame.copy()
    for name, spec in contract.columns.items():
        if spec.type == "integer":
            frame[name] = pd.to_numeric(frame[name]).astype("Int64")
        elif spec.type == "float":
            frame[name] = pd.to_numeric(frame[name]).astype(float)
    frame.to_csv(path, index=False)


class Retrainer:
    def __init__(
        self,
        params: Params,
        contract: Contract,
        root: Path,
        store: MonitorStore,
        references: References,
        state_dir: Path,
    ) -> None:
        self.params = params
        self.contract = contract
        self.root = root
        self.store = store
        self.references = references
        self.state_dir = state_dir
        self.runs_dir = state_dir / "runs"
        self.lock_path = state_dir / "retrain.lock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None

    # --- deciding ---------------------------------------------------------------------------

    def _check(self, force: bool) -> Decision | None:
        """A refusal, or None when a retrain may start (call with the lock held)."""
        cfg = self.params.retrain
        now = time.time()
        finished = [r for r in self.store.retrains(limit=50) if r.status != "running"]
        if (
            not force
            and finished
            and finished[0].finished_at is not None
            and now - finished[0].finished_at < cfg.cooldown_s
        ):
            ago = now - finished[0].finished_at
            return Decision(
                "cooldown",
                f"the last retrain ended {ago:.0f}s ago; "
                f"retrain.cooldown_s leaves {cfg.cooldown_s - ago:.0f}s",
            )
        labelled = self.store.count_labelled()
        if labelled < cfg.window.min_live_rows:
            return Decision(
                "not_enough_labels",
                f"{labelled} labelled live rows; "
                f"retrain.window.min_live_rows is {cfg.window.min_live_rows}",
            )
        completed = [
            r for r in finished if r.status in ("promoted", "pending_approval", "rejected")
        ]
        if not force and completed and completed[0].newest_live_at is not None:
            new = self.store.count_labelled(since=completed[0].newest_live_at)
            if new < cfg.min_new_labels:
                return Decision(
                    "not_enough_labels",
                    f"{new} labelled rows since retrain "
                    f"{completed[0].id}; retrain.min_new_labels is "
                    f"{cfg.min_new_labels}",
                )
        return None

    def request(
        self, trigger: str, force: bool = False, background: bool = True
    ) -> tuple[Decision, RunResult | None]:
        """Start a retrain unless one runs, the cooldown lasts or labels are too few."""
        if not self.params.retrain.enabled:
            return Decision("disabled", "retrain.enabled is false"), None
        lock = RetrainLock(self.lock_path)
        if not lock.acquire():
            return Decision(
                "busy",
                "the retrain lock is held: a retrain is running or "
                "another request is being decided",
            ), None
        try:
            self.store.interrupted_retrains()
            refused = self._check(force)
            if refused is not None:
                lock.release()
                return refused, None
            run_id = self.store.start_retrain(trigger, "")
        except BaseException:
            lock.release()
            raise
        decision = Decision("started", f"retrain {run_id} started ({trigger})", run_id)
        if background:
            self._thread = threading.Thread(
                target=self._run_locked,
                args=(run_id, lock, trigger),
                name=f"retrain-{run_id}",
                daemon=True,
            )
            self._thread.start()
            return decision, None
        return decision, self._run_locked(run_id, lock, trigger)

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def abort(self) -> None:
        """Stop a running retrain of this process (at shutdown): it is recorded as failed."""
        self._abort.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    # --- running ----------------------------------------------------------------------------

    def _run_locked(self, run_id: int, lock: RetrainLock, trigger: str = "") -> RunResult:
        started = time.monotonic()
        workdir = self.runs_dir / f"{run_id:05d}-{time.strftime('%Y%m%dT%H%M%S')}"
        result = RunResult(run_id=run_id, status="failed", reason="", workdir=str(workdir))
        window: Window | None = None
        self._audit("retrain_start", {"run": run_id, "trigger": trigger}, {}, trigger)
        try:
            window, workspace = self._prepare(workdir, run_id, trigger)
            result.details["window"] = {
                "history_rows": window.history_rows,
                "live_rows": window.live_rows,
                "live_train_rows": window.live_train_rows,
                "positive_rate_live": window.positive_rate_live,
            }
            self._pipeline(workspace, result, time.monotonic() + self.params.retrain.timeout_s)
        except (RetrainError, WorkspaceError) as err:
            result.status, result.reason = "failed", str(err)
        except Exception as err:
            log.exception("retrain %d failed", run_id)
            result.status, result.reason = "failed", f"{type(err).__name__}: {err}"
        finally:
            result.seconds = time.monotonic() - started
            try:
                self.store.finish_retrain(
                    run_id,
                    result.status,
                    result.reason,
                    version=result.version,
                    champion_before=result.champion_before,
                    champion_after=result.champion_after,
                    live_rows=window.live_rows if window else 0,
                    history_rows=window.history_rows if window else 0,
                    newest_live_at=window.newest_live_at if window else None,
                    workdir=str(workdir),
                )
            finally:
                self._audit(
                    "retrain_end",
                    {
                        "run": run_id,
                        "status": result.status,
                        "version": result.version,
                        "from": result.champion_before,
                        "to": result.champion_after,
                    },
                    {
                        "window": result.details.get("window", {}),
                        "seconds": round(result.seconds, 1),
                    },
                    result.reason,
                )
                self._prune()
                lock.release()
        level = logging.WARNING if result.status == "failed" else logging.INFO
        log.log(
            level,
            "retrain %d %s in %.0fs: %s",
            run_id,
            result.status,
            result.seconds,
            result.reason,
        )
        return result

    def _prepare(self, workdir: Path, run_id: int, trigger: str) -> tuple[Window, Workspace]:
        """Build the window and commit it, with the params and contract that read it, in a
        fresh workspace cloned from the project (see :mod:`plumbline.monitoring.workspace`)."""
        paths = layout(self.root)
        window = build_window(self.params, self.contract, paths, self.store)
        ws = Workspace.create(workdir, self.root, self.state_dir)
        contract_path = self.params.resolve(self.params.data.contract)
        raw_contract = yamlfile.safe_load(contract_path.read_text())
        features = self.contract.feature_columns(self.params.featurize.exclude_columns)
        (workdir / WINDOW_CONTRACT).parent.mkdir(parents=True, exist_ok=True)
        (workdir / WINDOW_CONTRACT).write_text(
            yaml.safe_dump(
                window_contract(raw_contract, features, self.contract.target.column),
                sort_keys=False,
            )
        )
        (workdir / WINDOW_SOURCE).parent.mkdir(parents=True, exist_ok=True)
        write_window(window, self.contract, workdir / WINDOW_SOURCE)
        raw = yamlfile.safe_load((workdir / "params.yaml").read_text())
        # Relative paths: the commit means the same wherever it is checked out.
        raw["data"]["contract"] = WINDOW_CONTRACT
        raw["data"]["source"] = {
            "kind": "csv",
            "path": WINDOW_SOURCE,
            "sep": ",",
            "encoding": "utf-8",
        }
        raw["data"]["resample_rows"] = None
        # Live rows are unique by request id; without the columns the server does not log
        # (e.g. duration) different requests can look identical, and each is a real case.
        raw.setdefault("validate", {})["check_duplicates"] = False
        if self.params.retrain.gate is not None:
            raw["gate"] = self.params.retrain.gate.model_dump(mode="json")
        (workdir / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        ws.inputs = ws.commit(
            f"retrain {run_id} ({trigger}): {window.history_rows} history + "
            f"{window.live_rows} labelled live rows\n\nBase: {ws.base}",
            "params.yaml",
            WINDOW_SOURCE,
            WINDOW_CONTRACT,
        )
        return window, ws

    def _audit(
        self, action: str, subject: dict[str, Any], evidence: dict[str, Any], comment: str
    ) -> None:
        """A retrain's start and end in the audit trail; a failing trail must not stop it."""
        from plumbline.promotion.approvals import MONITOR

        try:
            self._trail().append(
                action,
                MONITOR,
                {"model": self.params.mlflow.model_name, **subject},
                evidence,
                comment,
            )
        except Exception:
            log.exception("retrain: cannot write %s to the audit trail", action)

    def _trail(self) -> AuditTrail:
        from plumbline.governance.trail import AuditTrail

        return AuditTrail.for_project(self.params.audit, self.root)

    def _env(self, workdir: Path) -> dict[str, str]:
        from plumbline.core.tracking import tracking_uri

        env = dict(os.environ)
        # Anything the workspace records goes to the project's trail, not one in the workspace.
        env["PLUMBLINE_AUDIT_URL"] = self._trail().url
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        # The stages run the workspace's committed code: the files dvc.yaml hashes.
        python_path = [str(workdir / "src"), env.get("PYTHONPATH", "")]
        env.update(
            PLUMBLINE_ROOT=str(workdir),
            MLFLOW_TRACKING_URI=tracking_uri(self.params.mlflow, self.root),
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(p for p in python_path if p),
            DVC_NO_ANALYTICS="1",
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def _step(
        self, name: str, argv: list[str], workdir: Path, env: dict[str, str], deadline: float
    ) -> int:
        if self._abort.is_set():
            raise RetrainError("aborted: the monitor is shutting down")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RetrainError(
                f"retrain.timeout_s ({self.params.retrain.timeout_s:.0f}s) reached before {name}"
            )
        logs = workdir / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{name}.log"
        with log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            try:
                code = self._proc.wait(remaining)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
                raise RetrainError(
                    f"{name} did not finish within retrain.timeout_s "
                    f"({self.params.retrain.timeout_s:.0f}s)"
                ) from None
            finally:
                self._proc = None
        if self._abort.is_set():
            raise RetrainError("aborted: the monitor is shutting down")
        log.info("retrain step %s: exit %d", name, code)
        return code

    def _tail(self, workdir: Path, name: str) -> str:
        path = workdir / "logs" / f"{name}.log"
        lines = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
        return " / ".join(lines[-3:])

    def _repro(self, workdir: Path, env: dict[str, str], deadline: float) -> None:
        """``dvc repro`` in the workspace; its output split into one log per stage."""
        code = self._step("repro", [*DVC, "repro"], workdir, env, deadline)
        logs = workdir / "logs"
        text = (logs / "repro.log").read_text(errors="replace")
        current, parts = "", dict[str, str]()
        for line in text.splitlines(keepends=True):
            match = STAGE_LINE.search(line)
            if match:
                current = match.group(1)
            if current:
                parts[current] = parts.get(current, "") + line
        for name, part in parts.items():
            (logs / f"{name}.log").write_text(part)
        if code != 0:
            stage = current or "repro"
            raise RetrainError(f"stage {stage} failed: {self._tail(workdir, stage)}")

    def _pipeline(self, ws: Workspace, result: RunResult, deadline: float) -> None:
        from plumbline.core.tracking import configure
        from plumbline.model.verdict import GATE_FILE, GateResult
        from plumbline.promotion.registry import CHAMPION, Registry

        workdir = ws.path
        env = self._env(workdir)
        # The experiment must exist with its artifacts in the project, not in the work
        # directory (train would create it there, and old work directories are deleted).
        configure(self.params.mlflow, self.root)
        registry = Registry(
            self.params.mlflow.model_name, env["MLFLOW_TRACKING_URI"], self._trail()
        )
        result.champion_before = registry.alias_version(CHAMPION)
        self._repro(workdir, env, deadline)
        plumbline = [sys.executable, "-m", "plumbline"]
        code = self._step("gate", [*plumbline, "gate", "--retrain"], workdir, env, deadline)
        gate_file = workdir / GATE_FILE
        if not gate_file.is_file():
            raise RetrainError(f"gate failed without a verdict: {self._tail(workdir, 'gate')}")
        verdict = GateResult.read(gate_file)
        if code not in (0, 1) or (code == 1) == verdict.passed:
            raise RetrainError(f"gate exited {code}: {self._tail(workdir, 'gate')}")
        done, request = self._promote(registry, workdir, verdict)
        ws.commit_outputs(f"retrain {result.run_id}: dvc.lock and the tracked outputs")
        result.details["commit"] = ws.inputs
        result.details["ref"] = ws.keep(workdir.name)
        version = done.version
        result.version = version
        result.champion_after = registry.alias_version(CHAMPION)
        result.details["gate"] = verdict.summary()
        if request is not None:
            self.references.save(version, layout(workdir))
            result.status = "pending_approval"
            result.details["approval"] = {
                "required": request.required,
                "approvals": len(request.approvals),
                "expires_at": request.expires_at,
            }
            result.reason = (
                f"version {version} passed the gate and waits for {request.missing} "
                f"approval{'s' if request.missing != 1 else ''} (`plumbline approvals`); "
                f"champion stays {result.champion_after or 'unset'}; {verdict.summary()}"
            )
        elif verdict.passed and result.champion_after == version:
            self.references.save(version, layout(workdir))
            result.status = "promoted"
            result.reason = (
                f"version {version} is champion (was "
                f"{result.champion_before or 'none'}); {verdict.summary()}"
            )
        else:
            result.status = "rejected"
            result.reason = (
                f"gate failed, champion stays {result.champion_after or 'unset'}: "
                + "; ".join(verdict.reasons)
                + f" ({verdict.note})"
            )

    def _promote(
        self, registry: Registry, workdir: Path, verdict: GateResult
    ) -> tuple[Promotion, Pending | None]:
        """``plumbline promote`` for the workspace's candidate, by the monitor itself."""
        from plumbline.pipeline.model_card import MODEL_CARD_FILE, attach
        from plumbline.promotion.approvals import MONITOR, promote_candidate
        from plumbline.promotion.settings import load_promotion_params

        paths = layout(workdir)
        try:
            params = load_promotion_params(workdir / "params.yaml")
            done, request = promote_candidate(registry, params, paths, verdict, MONITOR)
            attach(registry.client, registry.name, done.version, paths / MODEL_CARD_FILE)
        except PlumblineError as err:
            raise RetrainError(f"promote failed: {err}") from None
        log_dir = workdir / "logs"
        log_dir.mkdir(exist_ok=True)
        (log_dir / "promote.log").write_text(
            f"version {done.version}; champion {done.champion_before} -> {done.champion_after}"
            + (f"; waits for {request.missing} approvals\n" if request else "\n")
        )
        return done, request

    def _prune(self) -> None:
        if not self.runs_dir.is_dir():
            return
        runs = sorted(p for p in self.runs_dir.iterdir() if p.is_dir())
        for old in runs[: max(0, len(runs) - self.params.retrain.keep_runs)]:
            shutil.rmtree(old, ignore_errors=True)
