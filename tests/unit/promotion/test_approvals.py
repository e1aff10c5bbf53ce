"""Approvals and the champion history on a real SQLite audit trail; the MLflow registry is a
stand-in holding aliases and tags in memory (the real one, which cannot be imported in the unit
tier, is in tests/integration/promotion/test_approvals.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from plumbline.core.paths import Layout, layout
from plumbline.governance.identity import Actor, Forbidden
from plumbline.governance.settings import ApprovalsConfig
from plumbline.governance.trail import AuditTrail, champion_history
from plumbline.model.verdict import Check, GateResult
from plumbline.promotion.approvals import (
    MONITOR,
    ApprovalError,
    NotPending,
    approve,
    pending,
    pending_text,
    reject,
    request_approval,
)
from plumbline.promotion.lineage import governance_link
from plumbline.promotion.registry import CHALLENGER, CHAMPION, HISTORY_PREFIX, Registry

ALICE = Actor("alice", "operator", "token")  # runs promote: the author
BOB = Actor("bob", "approver", "token")
CAROL = Actor("carol", "approver", "proxy")
DAVE = Actor("dave", "admin", "token")
VIEWER = Actor("vic", "viewer", "token")


class FakeClient:
    """The few MlflowClient calls that moving aliases and mirroring tags make."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.tags: dict[str, str] = {}

    def get_registered_model(self, name: str) -> Any:
        return SimpleNamespace(aliases=dict(self.aliases), tags=dict(self.tags))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.tags[key] = value


class MemoryRegistry(Registry):
    def __init__(self, trail: AuditTrail) -> None:
        self.name = "credit"
        self.uri = "memory:"
        self.client = FakeClient()  # type: ignore[assignment]
        self._trail = trail
        self._audit = None

    def exists(self) -> bool:
        return True


@pytest.fixture
def trail(tmp_path: Path) -> AuditTrail:
    return AuditTrail(f"sqlite:///{tmp_path / 'gov.sqlite'}")


@pytest.fixture
def registry(trail: AuditTrail) -> MemoryRegistry:
    reg = MemoryRegistry(trail)
    reg.set_champion("1", "promote", "first champion", DAVE)
    return reg


@pytest.fixture
def paths(tmp_path: Path) -> Layout:
    root = tmp_path / "project"
    (root / "reports").mkdir(parents=True)
    (root / "reports/gate.json").write_text('{"passed": true}\n')
    (root / "reports/model_card.md").write_text("# card\n")
    (root / "reports/fairness.json").write_text(
        json.dumps(
            {
                "slices": {
                    "age": {
                        "demographic_parity_difference": 0.04,
                        "equalized_odds_difference": 0.07,
                        "groups": {},
                    }
                }
            }
        )
    )
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train:\n    outs:\n    - path: models/model.skops\n"
        "      md5: abc123\n"
    )
    return layout(root)


def gate(champion: str | None = "1") -> GateResult:
    return GateResult(
        passed=True,
        model_name="credit",
        candidate={"model_md5": "abc123"},
        champion=None if champion is None else {"version": champion},
        max_regression=0.01,
        note=f"compared with champion version {champion}",
        checks=[Check("min_roc_auc", "roc_auc", 0.81, 0.7, ">=", True, "")],
        created_at="2025-01-01T00:00:00+00:00",
    )


def open_request(
    registry: MemoryRegistry,
    paths: Layout,
    required: int = 2,
    author: Actor = ALICE,
    now: datetime | None = None,
) -> ApprovalsConfig:
    cfg = ApprovalsConfig(required=required)
    registry.client.set_registered_model_alias("credit", CHALLENGER, "2")
    request_approval(registry.trail, registry, "2", author, cfg, gate(), paths, now)
    return cfg


def actions(trail: AuditTrail) -> list[str]:
    return [r.action for r in trail.records()]


def test_two_approvals_needed_and_the_author_cannot_approve(
    registry: MemoryRegistry, trail: AuditTrail, paths: Layout
) -> None:
    cfg = open_request(registry, paths)
    [waiting] = pending(trail, registry, cfg)
    assert (waiting.version, waiting.author, waiting.required, waiting.missing) == (
        "2",
        "alice",
        2,
        2,
    )
    assert waiting.evidence["gate"]["checks"][0]["check"] == "min_roc_auc"
    assert waiting.evidence["fairness"]["age"]["equalized_odds_difference"] == 0.07
    assert waiting.evidence["dvc_lock"] == {"models/model.skops": "abc123"}
    assert len(waiting.evidence["gate_json_sha256"]) == 64
    assert "version 2: 0 of 2 approvals" in pending_text([waiting])

    author = Actor("alice", "approver", "token")  # even with the approver role
    with pytest.raises(Forbidden, match="separation of duties"):
        approve(trail, registry, "2", author, "looks fine", cfg)
    assert actions(trail)[-1] == "refused"

    first = approve(trail, registry, "2", BOB, "gate and fairness checked", cfg)
    assert first.outcome == "recorded" and first.approvals == ["bob"]
    assert registry.alias_version(CHAMPION) == "1"
    with pytest.raises(ApprovalError, match="already approved"):
        approve(trail, registry, "2", BOB, "again", cfg)

    second = approve(trail, registry, "2", CAROL, "second pair of eyes", cfg)
    assert second.outcome == "promoted" and second.champion_after == "2"
    assert registry.alias_version(CHAMPION) == "2"
    promoted = champion_history(trail, "credit")[-1]
    assert (promoted.actor, promoted.subject["from"], promoted.subject["to"]) == ("carol", "1", "2")
    assert promoted.subject["approved_by"] == ["bob", "carol"]
    assert promoted.evidence["gate_json_sha256"] == waiting.evidence["gate_json_sha256"]
    assert pending(trail, registry, cfg) == []
    with pytest.raises(NotPending):
        approve(trail, registry, "2", DAVE, "late", cfg)

    link = governance_link(trail, "credit", "2")
    assert "bob (token)" in link.value["approved"] and "carol (proxy)" in link.value["approved"]
    assert link.value["promoted"].startswith("carol (proxy) at ")
    assert trail.verify().ok


def test_a_retrain_is_authored_by_the_monitor(
    registry: MemoryRegistry, trail: AuditTrail, paths: Layout
) -> None:
    cfg = open_request(registry, paths, required=1, author=MONITOR)
    decision = approve(trail, registry, "2", BOB, "retrain window looks right", cfg)
    assert decision.outcome == "promoted"


def test_comment_and_role_are_required(
    registry: MemoryRegistry, trail: AuditTrail, paths: Layout
) -> None:
    cfg = open_request(registry, paths, required=1)
    with pytest.raises(ApprovalError, match="comment"):
        approve(trail, registry, "2", BOB, "  ", cfg)
    for actor in (VIEWER, Actor("otto", "operator", "token")):
        with pytest.raises(Forbidden, match="approver"):
            approve(trail, registry, "2", actor, "ok", cfg)
        with pytest.raises(Forbidden, match="approver"):
            reject(trail, registry, "2", actor, "no", cfg)
    assert registry.alias_version(CHAMPION) == "1"
    assert len(pending(trail, registry, cfg)) == 1


def test_without_separation_of_duties_the_author_may_approve(
    registry: MemoryRegistry, trail: AuditTrail, paths: Layout
) -> None:
    cfg = ApprovalsConfig(required=1, separation_of_duties=False)
    registry.client.set_registered_model_alias("credit", CHALLENGER, "2")
    request_approval(trail, registry, "2", BOB, cfg, gate(), paths)
    assert approve(trail, registry, "2", BOB, "mine, and fine", cfg).outcome == "promoted"


def test_a_champion_moved_since_the_gate_moves_nothing(
    registry: MemoryRegistry, trail: AuditTrail, paths: Layout
) -> None:
    cfg = open_request(registry, paths, required=1)
    registry.set_champion("3", "promote", "someone else's promotion", DAVE)

    decision = approve(trail, registry, "2", BOB, "ok", cfg)

    assert decision.outcome == "regate" and "run `plumbline gate`" in decision.message
    assert registry.alias_version(CHAMPION) == "3"
    assert [r.subject["to"] for r in champion_history(trail, "credit")] == ["1", "3"]


def test_a_rejection_ends_the_request(
    registry: MemoryRegistry, trail: AuditTrail, paths: Layout
) -> None:
    cfg = open_request(registry, paths)
    approve(trail, registry, "2", BOB, "fine by me", cfg)

    decision = reject(trail, registry, "2", CAROL, "fairness gap too wide", cfg)

    assert decision.outcome == "rejected" and "rejected by carol" in decision.message
    assert registry.alias_version(CHALLENGER) is None
    assert registry.alias_version(CHAMPION) == "1"
    assert pending(trail, registry, cfg) == []
    with pytest.raises(NotPending):
        approve(trail, registry, "2", DAVE, "too late", cfg)
    assert "fairness gap too wide" in governance_link(trail, "credit", "2").value["rejected"]


def test_a_request_expires_once(registry: MemoryRegistry, trail: AuditTrail, paths: Layout) -> None:
    opened = datetime(2025, 1, 1, tzinfo=UTC)
    cfg = open_request(registry, paths, now=opened)
    assert len(pending(trail, registry, cfg, now=opened + timedelta(days=13))) == 1

    later = opened + timedelta(days=14, seconds=1)
    assert pending(trail, registry, cfg, now=later) == []
    assert pending(trail, registry, cfg, now=later) == []
    assert actions(trail).count("approval_expired") == 1
    assert registry.alias_version(CHALLENGER) is None
    with pytest.raises(NotPending):
        approve(trail, registry, "2", BOB, "ok", cfg, now=later)


def test_promote_again_on_the_same_gate_keeps_the_votes(
    registry: MemoryRegistry, trail: AuditTrail, paths: Layout
) -> None:
    cfg = open_request(registry, paths)
    approve(trail, registry, "2", BOB, "ok", cfg)
    again = request_approval(trail, registry, "2", ALICE, cfg, gate(), paths)
    assert [v.by for v in again.approvals] == ["bob"]
    assert actions(trail).count("approval_requested") == 1


def test_history_and_rollback_come_from_the_trail_not_the_tags(
    registry: MemoryRegistry, trail: AuditTrail
) -> None:
    registry.set_champion("2", "promote", "better", DAVE)
    registry.set_champion("3", "promote", "better still", DAVE)
    client = registry.client
    assert isinstance(client, FakeClient)
    mirrored = sorted(k for k in client.tags if k.startswith(HISTORY_PREFIX))
    assert len(mirrored) == 3  # the MLflow UI's copy
    # Someone rewrites the MLflow copy: a made-up champion, the rest deleted.
    client.tags = {
        mirrored[0]: json.dumps(
            {
                "seq": 1,
                "action": "promote",
                "from_version": None,
                "to_version": "9",
                "by": "mallory",
                "at": "x",
                "reason": "",
            }
        )
    }

    assert [(e.action, e.to_version, e.by) for e in registry.history()] == [
        ("promote", "1", "dave"),
        ("promote", "2", "dave"),
        ("promote", "3", "dave"),
    ]
    event = registry.rollback("latency", BOB)
    assert (event.from_version, event.to_version, event.by) == ("3", "2", "bob")
    assert registry.rollback(actor=BOB).to_version == "1"
    assert trail.verify().ok
