"""The one-shot that gives a new stack a champion: ``plumbline bootstrap``.

The ``bootstrap`` service of docker-compose.yml runs it before the API starts, so that a fresh
``docker compose up`` serves predictions with no manual step:

1. With ``--source`` (the project files baked into the pipeline image), lay out the project in
   the workspace, the project root (``PLUMBLINE_ROOT``): every file of the source is copied
   over, so params.yaml, dvc.yaml, the contract and the raw data are the image's. ``dvc.lock``
   is copied only when the workspace has none: the workspace's own lock describes the outputs
   it holds. Outputs, the DVC cache and anything else in the workspace are kept, so a second
   run reruns only what changed. A workspace outside git gets DVC's ``core.no_scm``.
   With ``--webhook-token-file``, make sure the file holds a valid token of the service
   account ``alertmanager`` (role operator), which Alertmanager's webhook sends to the
   monitor's ``POST /alerts``: kept when valid, else made and recorded in the audit trail.
2. ``dvc repro``: the pipeline, logging its run and model to ``MLFLOW_TRACKING_URI``.
3. ``plumbline gate``, then ``plumbline promote`` (which registers the candidate and moves
   ``champion`` only when the gate passed).
4. Exit 0 when the registry has a ``champion`` (the API has something to serve), else 1.

Before step 2 it waits (``--wait-tracking-s``) until an HTTP tracking server answers its
``/health``, and before anything touches the audit trail it waits (``--wait-audit-s``) until
the governance database accepts its login with its tables made (the teams set-up: PostgreSQL,
and the owner's one-shot ``audit grant``): an engine that cannot wait for a health check or a
one-shot before starting bootstrap (podman 4.3 without systemd runs none; Kubernetes has no
ordering at all) would otherwise fail the run on a server still starting.

With ``--outputs-only`` it stops after step 2: the workspace then holds the pipeline's outputs
of the image's commit (what the monitor compares live traffic with), and the registry is left
to the promotion workflow (Kubernetes: the monitor's init container).

Rerunning it is safe: an unchanged pipeline is a no-op, the gate compares the candidate with
itself and ``promote`` finds the version it registered before.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from plumbline.core.errors import PlumblineError

log = logging.getLogger("plumbline.promotion.first_champion")

KEEP_IF_PRESENT = frozenset({"dvc.lock"})


class BootstrapError(PlumblineError):
    """A step failed, or the stack would have no champion to serve."""


def sync_project(source: Path, root: Path) -> list[str]:
    """Copy every file under ``source`` into ``root``; returns the relative paths copied."""
    if not (source / "dvc.yaml").is_file():
        raise BootstrapError(f"{source} is not a project copy: it has no dvc.yaml")
    if source.resolve() == root.resolve():
        return []
    copied = []
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(source)
        dest = root / rel
        if rel.as_posix() in KEEP_IF_PRESENT and dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        copied.append(rel.as_posix())
    return copied


def wait_for_tracking_server(
    uri: str | None, timeout_s: float, interval_s: float = 2.0
) -> float | None:
    """Wait until the HTTP(S) tracking server at ``uri`` answers ``GET /health`` with 200;
    returns the seconds waited (None for a local store, which needs no wait)."""
    if not uri or urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return None
    health = uri.rstrip("/") + "/health"
    started = time.monotonic()
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(health, timeout=5) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
                last = f"HTTP {answer.status}"
        except (OSError, ValueError) as exc:  # refused, unresolvable, HTTP errors, timeouts
            last = str(exc)
        if time.monotonic() - started >= timeout_s:
            raise BootstrapError(
                f"the tracking server {uri} did not answer {health} within {timeout_s:g} s "
                f"(last: {last})"
            )
        time.sleep(interval_s)


def wait_for_audit_trail(root: Path, timeout_s: float) -> None:
    """Open the project's audit trail once, waiting up to ``timeout_s`` for its database."""
    from plumbline.governance.trail import AuditTrail
    from plumbline.promotion.settings import load_promotion_params

    started = time.monotonic()
    params = load_promotion_params(root / "params.yaml")
    AuditTrail.for_project(params.audit, root, timeout_s).close()
    waited = time.monotonic() - started
    if waited >= 1:
        log.info("the governance database was ready after %.1fs", waited)


def _run(argv: list[str], root: Path, env: dict[str, str], check: bool = True) -> int:
    log.info("$ %s", " ".join(argv))
    started = time.perf_counter()
    code = subprocess.run(argv, cwd=root, env=env, check=False).returncode
    log.info("exit %d after %.1fs", code, time.perf_counter() - started)
    if check and code != 0:
        raise BootstrapError(f"`{' '.join(argv)}` failed with exit code {code}")
    return code


WEBHOOK_ACCOUNT = "alertmanager"


def ensure_webhook_token(root: Path, token_file: Path) -> str:
    """The token of the ``alertmanager`` service account (operator) in ``token_file``."""
    from plumbline.governance.identity import Users, cli_actor
    from plumbline.governance.service_accounts import ensure_token_file
    from plumbline.governance.trail import AuditTrail
    from plumbline.promotion.settings import load_promotion_params

    params = load_promotion_params(root / "params.yaml")
    trail = AuditTrail.for_project(params.audit, root)
    try:
        users = Users(trail.engine)
        return ensure_token_file(
            trail,
            users,
            WEBHOOK_ACCOUNT,
            "operator",
            token_file,
            cli_actor(users, os.environ),
        )
    finally:
        trail.close()


def bootstrap(
    root: Path,
    source: Path | None,
    webhook_token_file: Path | None = None,
    outputs_only: bool = False,
    wait_tracking_s: float = 0.0,
    wait_audit_s: float = 0.0,
) -> str | None:
    """Run the steps above in ``root``; returns the champion's version (None with
    ``outputs_only``)."""
    from plumbline.promotion.registry import CHAMPION, Registry
    from plumbline.promotion.settings import load_promotion_params

    root.mkdir(parents=True, exist_ok=True)
    if source is not None:
        copied = sync_project(source, root)
        log.info("laid out %d project files from %s in %s", len(copied), source, root)
    if not (root / "dvc.yaml").is_file():
        raise BootstrapError(f"{root} has no dvc.yaml: give --source or run it in a checkout")
    if webhook_token_file is not None or not outputs_only:  # both write audit records
        wait_for_audit_trail(root, wait_audit_s)
    if webhook_token_file is not None:
        outcome = ensure_webhook_token(root, webhook_token_file)
        log.info("webhook token of %s in %s: %s", WEBHOOK_ACCOUNT, webhook_token_file, outcome)
    env = dict(os.environ, PLUMBLINE_ROOT=str(root))
    # dvc.yaml's stages call `plumbline`: the one installed beside this interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    dvc = [sys.executable, "-m", "dvc"]
    plumbline = [sys.executable, "-m", "plumbline"]
    waited = wait_for_tracking_server(os.environ.get("MLFLOW_TRACKING_URI"), wait_tracking_s)
    if waited is not None:
        log.info("tracking server answered after %.1fs", waited)
    if not (root / ".git").exists():
        _run([*dvc, "config", "--local", "core.no_scm", "true"], root, env)
    _run([*dvc, "repro"], root, env)
    if outputs_only:
        return None
    gate_code = _run([*plumbline, "gate"], root, env, check=False)
    _run([*plumbline, "promote"], root, env)
    params = load_promotion_params(root / "params.yaml")
    registry = Registry.from_params(params, root)
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        raise BootstrapError(
            f"registered model {registry.name!r} in {registry.uri} has no {CHAMPION!r}: the "
            f"gate {'failed' if gate_code else 'passed'} (see reports/gate.json), so the API "
            "has nothing to serve"
        )
    return champion
