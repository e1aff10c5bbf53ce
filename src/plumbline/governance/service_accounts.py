"""Service accounts: programs that call Plumbline's routes (Alertmanager's webhook to the
monitor) with a personal token read from a file, provisioned by the deployment itself so that
a fresh stack needs no manual step.

Only the roles a program needs (viewer, operator) can be provisioned this way: approving and
managing users stay with named people.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from plumbline.core.errors import PlumblineError
from plumbline.governance.identity import Actor, Users
from plumbline.governance.settings import Role
from plumbline.governance.trail import AuditTrail

SERVICE_ROLES: tuple[Role, ...] = ("viewer", "operator")
# Readable by the program that sends the token (Alertmanager runs as another user); the file
# belongs in a volume that only the provisioning job and that program mount.
TOKEN_FILE_MODE = 0o644

Outcome = Literal["kept", "created", "renewed"]


def ensure_token_file(
    trail: AuditTrail, users: Users, name: str, role: Role, path: Path, actor: Actor
) -> Outcome:
    """Make ``path`` hold a valid token of service account ``name`` with ``role``: ``kept``
    when it already authenticates as that account with that role; else the account is added
    (``created``) or given a new token (``renewed``: the old one was revoked, expired or lost),
    recorded in the trail as ``actor``'s doing."""
    if role not in SERVICE_ROLES:
        raise PlumblineError(
            f"a service account's role is one of {', '.join(SERVICE_ROLES)}, not {role}: "
            "approvers and admins are people (`plumbline users add`)"
        )
    existing = users.role(name)
    if existing is not None and existing != role:
        raise PlumblineError(
            f"user {name!r} exists with role {existing}, not {role}: change it with "
            f"`plumbline users role {name} {role}` or choose another name"
        )
    if path.is_file():
        found = users.actor_for_token(path.read_text().strip())
        if found is not None and found.name == name and found.role == role:
            return "kept"
    if existing is None:
        token_id, token = users.add(name, role)
        trail.append(
            "user_add",
            actor,
            {"user": name, "role": role, "token_id": token_id},
            {"service_account": True, "token_file": str(path)},
        )
        outcome: Outcome = "created"
    else:
        token_id, token = users.token(name)
        trail.append(
            "token_add",
            actor,
            {"user": name, "token_id": token_id},
            {"service_account": True, "token_file": str(path)},
        )
        outcome = "renewed"
    _write_secret(path, token)
    return outcome


def _write_secret(path: Path, token: str) -> None:
    """Replace ``path`` atomically: a reader never sees half a token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(token)
        os.chmod(tmp, TOKEN_FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
