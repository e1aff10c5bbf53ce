"""Service accounts (Alertmanager's webhook token): made once, kept while valid, replaced when
revoked or lost, each new token an audit record; never an approver or admin, never a silent
role change."""

from __future__ import annotations

from pathlib import Path

import pytest

from plumbline.cli.governance import SERVICE_ROLES as CLI_SERVICE_ROLES
from plumbline.core.errors import PlumblineError
from plumbline.governance.identity import Actor, Users
from plumbline.governance.service_accounts import SERVICE_ROLES, ensure_token_file
from plumbline.governance.trail import AuditTrail

DEPLOYER = Actor("local:deploy", "admin", "local")


@pytest.fixture
def trail(tmp_path: Path) -> AuditTrail:
    return AuditTrail(f"sqlite:///{tmp_path / 'gov.sqlite'}")


def test_the_token_is_made_once_kept_while_valid_and_replaced_when_revoked(
    trail: AuditTrail, tmp_path: Path
) -> None:
    users = Users(trail.engine)
    path = tmp_path / "secrets" / "monitor-token"
    assert ensure_token_file(trail, users, "alertmanager", "operator", path, DEPLOYER) == "created"
    first = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o644 and not first.endswith("\n")
    actor = users.actor_for_token(first)
    assert actor is not None and (actor.name, actor.role) == ("alertmanager", "operator")

    assert ensure_token_file(trail, users, "alertmanager", "operator", path, DEPLOYER) == "kept"
    assert path.read_text() == first

    users.revoke(first.split("_")[1])
    assert ensure_token_file(trail, users, "alertmanager", "operator", path, DEPLOYER) == "renewed"
    second = path.read_text()
    assert second != first and users.actor_for_token(second) is not None

    path.unlink()  # a lost volume: a new token, the same account
    assert ensure_token_file(trail, users, "alertmanager", "operator", path, DEPLOYER) == "renewed"
    assert [u["name"] for u in users.list()] == ["alertmanager"]

    records = [(r.action, r.actor, r.subject["user"]) for r in trail.records()]
    assert records == [
        ("user_add", "local:deploy", "alertmanager"),
        ("token_add", "local:deploy", "alertmanager"),
        ("token_add", "local:deploy", "alertmanager"),
    ]
    assert trail.verify().ok
    assert not list(path.parent.glob(".monitor-token.*"))  # no temporary file left


def test_people_roles_and_role_changes_are_refused(trail: AuditTrail, tmp_path: Path) -> None:
    users = Users(trail.engine)
    path = tmp_path / "token"
    for role in ("approver", "admin"):
        with pytest.raises(PlumblineError, match="approvers and admins are people"):
            ensure_token_file(trail, users, "bot", role, path, DEPLOYER)  # type: ignore[arg-type]
    users.add("alertmanager", "viewer")
    with pytest.raises(PlumblineError, match="exists with role viewer, not operator"):
        ensure_token_file(trail, users, "alertmanager", "operator", path, DEPLOYER)
    assert not path.exists() and users.role("alertmanager") == "viewer"


def test_the_command_offers_the_same_roles() -> None:
    assert CLI_SERVICE_ROLES == SERVICE_ROLES
