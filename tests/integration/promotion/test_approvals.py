"""Governed promotion as a user runs it: `plumbline promote` with approvals required, then
`plumbline approvals`, `approve`, `reject`, `models`, `rollback`, `lineage` and `audit verify`,
on a real MLflow registry (a temporary SQLite store) and the project's audit trail.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from support.cli import ok, plumbline
from support.params import set_params
from support.promotion import train_candidate

from plumbline.core import yamlfile
from plumbline.governance.identity import Users
from plumbline.governance.trail import AuditTrail

HISTORY_PREFIX = "plumbline.history."


def trail(project: Path) -> AuditTrail:
    return AuditTrail(f"sqlite:///{project / 'logs/governance/governance.sqlite'}")


def tokens(project: Path, **roles: str) -> dict[str, str]:
    """Users with these roles; their tokens by name."""
    users = Users(trail(project).engine)
    return {name: users.add(name, role)[1] for name, role in roles.items()}  # type: ignore[arg-type]


def aliases(store: Path, name: str) -> dict[str, str]:
    uri = f"sqlite:///{store}"
    model = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(name)
    return {k: str(v) for k, v in model.aliases.items()}


def model_name(project: Path) -> str:
    return str(yamlfile.safe_load((project / "params.yaml").read_text())["mlflow"]["model_name"])


def as_user(monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    if token is None:
        monkeypatch.delenv("PLUMBLINE_TOKEN", raising=False)
    else:
        monkeypatch.setenv("PLUMBLINE_TOKEN", token)


def first_champion_then_candidate(project: Path, required: int, **approvals: object) -> None:
    """Version 1 promoted as today, then approvals required and a better candidate gated."""
    train_candidate(project)
    ok("gate")
    ok("promote")
    set_params(
        project,
        **{"promotion.approvals.required": required},
        **{f"promotion.approvals.{k}": v for k, v in approvals.items()},
    )
    train_candidate(project, **{"train.logistic_regression.C": 0.5})
    ok("gate")


def test_two_approvals_move_the_champion_and_the_author_cannot_approve(
    project: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_champion_then_candidate(project, required=2)
    t = tokens(project, alice="operator", bob="approver", carol="approver")
    name = model_name(project)

    as_user(monkeypatch, t["alice"])
    out = ok("promote")
    assert "version 2 waits for 2 approvals" in out and "champion stays version 1" in out
    assert aliases(store, name) == {"champion": "1", "challenger": "2"}
    listing = ok("models")
    assert "pending approval:" in listing and "version 2: 0 of 2 approvals (by alice" in listing
    shown = ok("approvals")
    assert "version 2: 0 of 2 approvals; by alice" in shown
    assert "pass  min_roc_auc" in shown and "gate.json sha256" in shown
    assert "dvc.lock data/" in shown

    # alice has no approver role; an approver alice would still be the author.
    code, _, err = plumbline("approve", "2", "--comment", "mine")
    assert code == 1 and "approver" in err
    Users(trail(project).engine).set_role("alice", "approver")
    code, _, err = plumbline("approve", "2", "--comment", "mine")
    assert code == 1 and "separation of duties" in err

    as_user(monkeypatch, t["bob"])
    out = ok("approve", "2", "--comment", "metrics and fairness slices checked")
    assert "approval 1 of 2 recorded" in out
    assert aliases(store, name)["champion"] == "1"
    code, _, err = plumbline("approve", "2", "--comment", "again")
    assert code == 1 and "already approved" in err

    as_user(monkeypatch, t["carol"])
    out = ok("approve", "2", "--comment", "second review")
    assert "approved by bob, carol: champion -> 2 (was 1)" in out
    assert aliases(store, name) == {"champion": "2", "challenger": "2"}
    assert "no version" in ok("approvals")
    listing = ok("models")
    assert re.search(r"promote\s+1 -> 2\s+by carol: approved by bob, carol", listing)

    # This project is no git checkout, so the chain misses its commit; the trail's link is there.
    _, out, _ = plumbline("lineage", "2", "--json")
    lineage = json.loads(out)
    governance = next(link for link in lineage["links"] if link["name"] == "governance")
    assert "bob (token)" in governance["value"]["approved"]
    assert governance["value"]["promoted"].startswith("carol (token) at ")
    assert governance["value"]["registered"].startswith("alice (token) at ")
    assert trail(project).verify().ok


def test_a_rejection_and_a_local_actor(
    project: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_champion_then_candidate(project, required=1)
    ok("promote")  # the local user is the author
    t = tokens(project, bob="approver")
    name = model_name(project)

    as_user(monkeypatch, None)
    code, _, err = plumbline("approve", "2", "--comment", "ok")
    assert code == 1 and "PLUMBLINE_TOKEN" in err  # a named person is needed once users exist
    as_user(monkeypatch, t["bob"])
    with pytest.raises(SystemExit):  # argparse: --comment is required
        plumbline("reject", "2")
    out = ok("reject", "2", "--comment", "the fairness gap on age is too wide")
    assert "version 2 rejected by bob; champion stays 1" in out
    assert aliases(store, name) == {"champion": "1"}
    assert "no version" in ok("approvals")
    code, _, err = plumbline("approve", "2", "--comment", "too late")
    assert code == 1 and "no open approval request" in err
    assert re.search(r"^2\s+-\s", ok("models"), re.MULTILINE)  # still registered


def test_a_request_expires(project: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_champion_then_candidate(project, required=1, expire_after_days=1e-5)  # under a second
    assert "waits for 1 approval " in ok("promote")
    time.sleep(1.2)
    t = tokens(project, bob="approver")

    assert "no version" in ok("approvals")
    assert "no version" in ok("approvals")
    expired = trail(project).records(actions=["approval_expired"])
    assert [r.subject["version"] for r in expired] == ["2"]
    as_user(monkeypatch, t["bob"])
    code, _, err = plumbline("approve", "2", "--comment", "ok")
    assert code == 1 and "no open approval request" in err
    assert aliases(store, model_name(project)) == {"champion": "1"}


def test_the_mlflow_history_tags_decide_nothing(project: Path, store: Path) -> None:
    for c in (1.0, 0.5, 2.0):
        train_candidate(project, **{"train.logistic_regression.C": c})
        ok("gate")
        ok("promote")
    name = model_name(project)
    before = ok("models")
    uri = f"sqlite:///{store}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tags = sorted(k for k in client.get_registered_model(name).tags if k.startswith(HISTORY_PREFIX))
    assert len(tags) == 3  # the mirror for the MLflow UI
    # Someone edits one tag to claim version 3 was never champion and deletes the others.
    forged = json.loads(client.get_registered_model(name).tags[tags[0]])
    forged.update(to_version="3", by="mallory")
    client.set_registered_model_tag(name, tags[0], json.dumps(forged))
    for key in tags[1:]:
        client.delete_registered_model_tag(name, key)

    def history(listing: str) -> list[str]:
        return [line for line in listing.splitlines() if " by " in line]

    assert len(history(before)) == 3
    assert history(ok("models")) == history(before)
    assert "from version 3 to version 2" in ok("rollback")
    assert "from version 2 to version 1" in ok("rollback")
    code, _, err = plumbline("rollback")
    assert code == 1 and "no earlier champion" in err
    assert trail(project).verify().ok
    code, out, err = plumbline("audit", "verify")
    assert code == 0, out + err


def refusals(project: Path) -> list[tuple[str, str, str]]:
    """(actor, what was refused, role needed) of each ``refused`` record."""
    return [
        (
            r.actor,
            str(r.subject.get("command") or r.subject.get("attempt") or r.subject.get("route")),
            str(r.evidence.get("needs")),
        )
        for r in trail(project).records(actions=["refused"])
    ]


def test_commands_need_their_role(
    project: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A viewer's PLUMBLINE_TOKEN may not promote, roll back or add users: exit 1 naming the
    role needed, nothing changes; an operator promotes, an approver rolls back, an admin adds
    users."""
    t = tokens(project, root="admin", vera="viewer", olga="operator", abe="approver")
    name = model_name(project)
    train_candidate(project)
    ok("gate")

    as_user(monkeypatch, t["vera"])
    code, _, err = plumbline("promote")
    assert code == 1 and "role operator needed" in err and "viewer" in err, err
    code, _, err = plumbline("users", "add", "eve", "--role", "admin")
    assert code == 1 and "role admin needed" in err and "viewer" in err, err
    assert Users(trail(project).engine).role("eve") is None
    assert ("vera", "users add", "admin") in refusals(project)

    as_user(monkeypatch, t["olga"])
    assert "champion -> 1" in ok("promote")
    train_candidate(project, **{"train.logistic_regression.C": 0.5})
    ok("gate")
    assert "champion -> 2 (was 1)" in ok("promote")
    code, _, err = plumbline("rollback")
    assert code == 1 and "role approver needed" in err and "operator" in err, err

    as_user(monkeypatch, t["vera"])
    code, _, err = plumbline("rollback")
    assert code == 1 and "role approver needed" in err and "viewer" in err, err
    assert aliases(store, name)["champion"] == "2"

    as_user(monkeypatch, t["abe"])
    assert "from version 2 to version 1" in ok("rollback")
    assert aliases(store, name)["champion"] == "1"
    code, _, err = plumbline("users", "add", "eve", "--role", "viewer")
    assert code == 1 and "role admin needed" in err and "approver" in err, err

    as_user(monkeypatch, t["root"])
    assert "plb_" in ok("users", "add", "eve", "--role", "viewer")
    assert Users(trail(project).engine).role("eve") == "viewer"
    assert trail(project).verify().ok


def test_refused_promote_and_rollback_are_audit_records(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tokens(project, root="admin", vera="viewer")
    train_candidate(project)
    ok("gate")
    as_user(monkeypatch, t["vera"])
    assert plumbline("promote")[0] == 1
    assert plumbline("rollback")[0] == 1
    refused = refusals(project)
    assert [r[0] for r in refused] == ["vera", "vera"], refused
    assert [r[2] for r in refused] == ["operator", "approver"], refused
