"""Approvals between a passing gate and ``@champion`` (``promotion.approvals``).

With ``required`` >= 1, ``plumbline promote`` (or an automatic retrain) registers a passing
candidate, points ``challenger`` at it and opens a request: an ``approval_requested`` record
in the audit trail that carries the evidence the approvers judge (the gate's checks, the
fairness slices, the hashes of reports/gate.json, the model card and dvc.lock). Everything
about a request is read back from the trail, never from MLflow:

* a request is open from its ``approval_requested`` record until a ``reject``, an
  ``approval_expired`` or the ``promote`` of its version (or a newer request for the version);
* each approver approves once, with a comment; with ``separation_of_duties`` the candidate's
  author (who ran promote, ``monitor`` for a retrain) cannot approve it;
* the last required approval moves ``champion`` under the guards of promote: the gate passed
  and the champion is the one the gate compared with. When the champion moved since, the
  approval is kept but nothing moves, and the decision asks for a new gate run;
* a rejection ends the request; the version stays registered and loses ``challenger``;
* a request older than ``expire_after_days`` is recorded once as ``approval_expired``.

The monitor's HTTP routes and the CLI call :func:`pending`, :func:`approve` and :func:`reject`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from plumbline.core.errors import PlumblineError
from plumbline.core.paths import Layout
from plumbline.governance.identity import Actor, Forbidden, iso, role_allows
from plumbline.governance.settings import ApprovalsConfig, Role
from plumbline.governance.trail import AuditTrail, Record
from plumbline.model.fairness import FAIRNESS_FILE
from plumbline.model.verdict import GateResult
from plumbline.promotion.registry import CHAMPION, Promotion, Registry, evidence
from plumbline.promotion.settings import PromotionParams

APPROVER: Role = "approver"
# Who records an expiry: nobody acted, the clock did.
CLOCK = Actor(name="plumbline", role="operator", via="system")
# The monitor's own automatic retrains.
MONITOR = Actor(name="monitor", role="operator", via="system")
# Records that end an open request (besides a newer request for the same version).
CLOSING = ("reject", "approval_expired", "promote")


class ApprovalError(PlumblineError):
    """The approval or rejection cannot be recorded (no comment, a second vote, ...)."""


class NotPending(ApprovalError):
    """The version has no open approval request."""


@dataclass
class Vote:
    by: str
    via: str
    at: str
    comment: str


@dataclass
class Pending:
    """An open approval request, with what the approvers judge."""

    model: str
    version: str
    author: str
    requested_at: str
    expires_at: str
    required: int
    approvals: list[Vote]
    champion_at_gate: str | None
    evidence: dict[str, Any]
    request_seq: int
    separation_of_duties: bool = True

    @property
    def missing(self) -> int:
        return max(0, self.required - len(self.approvals))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["missing"] = self.missing
        return out


@dataclass
class Decision:
    """What an approval or rejection did."""

    version: str
    action: Literal["approve", "reject"]
    outcome: Literal["recorded", "promoted", "regate", "rejected"]
    approvals: list[str]
    required: int
    champion_before: str | None
    champion_after: str | None
    message: str
    records: list[int] = field(default_factory=list)  # audit seqs written

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


# --- evidence -----------------------------------------------------------------------------


def gate_table(gate: GateResult) -> list[dict[str, Any]]:
    return [
        {
            "check": c.name,
            "metric": c.metric,
            "value": c.value,
            "needs": f"{c.comparison} {c.threshold}",
            "passed": c.passed,
        }
        for c in gate.checks
    ]


def fairness_slices(paths: Layout) -> dict[str, Any]:
    """Per slice: its disparities and the groups with the highest and lowest selection rate."""
    path = paths / FAIRNESS_FILE
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    keys = (
        "demographic_parity_difference",
        "demographic_parity_ratio",
        "equalized_odds_difference",
        "highest_selection_group",
        "lowest_selection_group",
    )
    return {
        name: {k: table.get(k) for k in keys}
        for name, table in (report.get("slices") or {}).items()
    }


def request_evidence(gate: GateResult, paths: Layout) -> dict[str, Any]:
    """Kept in the request record, so approvers judge it even after a retrain's workspace is
    gone."""
    return {
        **evidence(paths),
        "gate": {
            "passed": gate.passed,
            "summary": gate.summary(),
            "at": gate.created_at,
            "champion_version": gate.champion_version,
            "checks": gate_table(gate),
            "comparison": gate.comparison,
        },
        "fairness": fairness_slices(paths),
    }


# --- reading requests from the trail -------------------------------------------------------


def _model_records(trail: AuditTrail, model: str, version: str | None = None) -> list[Record]:
    actions = ("approval_requested", "approve", *CLOSING, "rollout_verdict")
    return trail.records(actions=actions, subject_version=version, subject_model=model)


def _requests(records: list[Record]) -> dict[str, Pending]:
    """The open request of each version, from its records (oldest first)."""
    open_: dict[str, Pending] = {}
    for r in sorted(records, key=lambda r: r.seq):
        version = str(r.subject.get("version"))
        if r.action == "approval_requested":
            open_[version] = Pending(
                model=str(r.subject.get("model")),
                version=version,
                author=r.actor,
                requested_at=r.at,
                expires_at=str(r.subject.get("expires_at")),
                required=int(r.subject.get("required", 1)),
                approvals=[],
                champion_at_gate=r.subject.get("champion_at_gate"),
                evidence=dict(r.evidence),
                request_seq=r.seq,
                separation_of_duties=bool(r.subject.get("separation_of_duties", True)),
            )
        elif version in open_ and r.action == "approve":
            open_[version].approvals.append(Vote(r.actor, r.via, r.at, r.comment))
        elif version in open_ and r.action == "rollout_verdict":
            open_[version].evidence["rollout_verdict"] = {
                "at": r.at,
                **r.subject,
                "statistics": r.evidence.get("statistics"),
                "comment": r.comment,
            }
        elif r.action in CLOSING:
            open_.pop(version, None)
    return open_


def _expire(trail: AuditTrail, registry: Registry, request: Pending, now: datetime) -> bool:
    """Record the expiry of an overdue request (once); whether it expired."""
    if now < _parse(request.expires_at):
        return False
    # Another process may have expired it since we read the trail.
    if request.version not in _requests(_model_records(trail, registry.name, request.version)):
        return True
    registry.record(
        "approval_expired",
        CLOCK,
        {"version": request.version, "request_seq": request.request_seq},
        {},
        f"no decision within {request.expires_at} "
        f"({len(request.approvals)} of {request.required} approvals)",
    )
    registry.drop_challenger(request.version)
    return True


def pending(
    trail: AuditTrail,
    registry: Registry,
    cfg: ApprovalsConfig,
    now: datetime | None = None,
) -> list[Pending]:
    """Open requests of ``registry``'s model, oldest first; overdue ones are recorded as
    ``approval_expired`` and left out."""
    del cfg  # each request carries the settings it was opened with
    now = now or datetime.now(UTC)
    open_ = _requests(_model_records(trail, registry.name))
    return [
        p
        for p in sorted(open_.values(), key=lambda p: p.request_seq)
        if not _expire(trail, registry, p, now)
    ]


def _open_request(trail: AuditTrail, registry: Registry, version: str, now: datetime) -> Pending:
    request = _requests(_model_records(trail, registry.name, version)).get(version)
    if request is None or _expire(trail, registry, request, now):
        raise NotPending(
            f"{registry.name!r} version {version} has no open approval request "
            "(see `plumbline approvals`)"
        )
    return request


# --- opening a request ----------------------------------------------------------------------


def request_approval(
    trail: AuditTrail,
    registry: Registry,
    version: str,
    actor: Actor,
    cfg: ApprovalsConfig,
    gate: GateResult,
    paths: Layout,
    now: datetime | None = None,
) -> Pending:
    """Open the request for a passing, held candidate, unless one is open on the same gate
    (then that one is returned, votes and all)."""
    now = now or datetime.now(UTC)
    proof = request_evidence(gate, paths)
    current = _requests(_model_records(trail, registry.name, version)).get(version)
    if current is not None and not _expire(trail, registry, current, now):
        same_gate = current.evidence.get("gate_json_sha256") == proof["gate_json_sha256"]
        if same_gate and current.champion_at_gate == gate.champion_version:
            return current
    registry.record(
        "approval_requested",
        actor,
        {
            "version": version,
            "required": cfg.required,
            "separation_of_duties": cfg.separation_of_duties,
            "champion_at_gate": gate.champion_version,
            "expires_at": iso(now + timedelta(days=cfg.expire_after_days)),
        },
        proof,
        f"waits for {cfg.required} approval{'s' if cfg.required != 1 else ''}; {gate.summary()}",
    )
    return _open_request(trail, registry, version, now)


def promote_candidate(
    registry: Registry,
    params: PromotionParams,
    paths: Layout,
    gate: GateResult,
    actor: Actor,
    challenger_only: bool = False,
) -> tuple[Promotion, Pending | None]:
    """``plumbline promote`` and the retrain's promote: today's promote when no approval is
    required, else a passing candidate is held as ``challenger`` with an open request."""
    cfg = params.promotion.approvals
    done = registry.promote(
        params, paths, gate, challenger_only, actor=actor, hold=cfg.required > 0
    )
    if not done.held:
        return done, None
    return done, request_approval(registry.trail, registry, done.version, actor, cfg, gate, paths)


# --- deciding -------------------------------------------------------------------------------


def _check_actor(actor: Actor, what: str) -> None:
    if not role_allows(actor.role, APPROVER):
        raise Forbidden(
            f"{what} needs the role {APPROVER!r}; {actor.name} (via {actor.via}) is {actor.role!r}",
            actor,
            APPROVER,
        )


def _check_comment(comment: str, what: str) -> str:
    text = comment.strip()
    if not text:
        raise ApprovalError(f"{what} needs a comment: say what you checked")
    return text


def approve(
    trail: AuditTrail,
    registry: Registry,
    version: str,
    actor: Actor,
    comment: str,
    cfg: ApprovalsConfig,
    now: datetime | None = None,
) -> Decision:
    """Record ``actor``'s approval of ``version``; the last required one moves ``champion``
    when the champion is still the one the gate compared with."""
    now = now or datetime.now(UTC)
    _check_actor(actor, "approving")
    text = _check_comment(comment, "an approval")
    request = _open_request(trail, registry, str(version), now)
    version = request.version
    # The stricter of today's setting and the one the request was opened under.
    separate = cfg.separation_of_duties or request.separation_of_duties
    if separate and actor.name == request.author:
        registry.record(
            "refused",
            actor,
            {"version": version, "attempt": "approve", "request_seq": request.request_seq},
            {},
            f"separation of duties: {actor.name} produced version {version}",
        )
        raise Forbidden(
            f"separation of duties: {actor.name} produced {registry.name!r} version {version} "
            "and cannot approve it; another approver must",
            actor,
            APPROVER,
        )
    if any(v.by == actor.name for v in request.approvals):
        raise ApprovalError(f"{actor.name} already approved version {version}")
    vote = registry.record(
        "approve", actor, {"version": version, "request_seq": request.request_seq}, {}, text
    )
    approvers = [*(v.by for v in request.approvals), actor.name]
    before = registry.alias_version(CHAMPION)
    decision = Decision(
        version=version,
        action="approve",
        outcome="recorded",
        approvals=approvers,
        required=request.required,
        champion_before=before,
        champion_after=before,
        message="",
        records=[vote.seq],
    )
    if len(approvers) < request.required:
        left = request.required - len(approvers)
        decision.message = (
            f"approval {len(approvers)} of {request.required} recorded; version {version} "
            f"waits for {left} more"
        )
        return decision
    gate = request.evidence.get("gate") or {}
    if not gate.get("passed") or before != request.champion_at_gate:
        decision.outcome = "regate"
        decision.message = (
            f"approval {len(approvers)} of {request.required} recorded, but the champion moved "
            f"since the gate ran (gate compared with {request.champion_at_gate or 'no champion'}"
            f", now {before or 'none'}): {CHAMPION} stays; run `plumbline gate` and "
            "`plumbline promote` again"
        )
        return decision
    event = registry.set_champion(
        version,
        "promote",
        f"approved by {', '.join(approvers)}; {gate.get('summary', '')}",
        actor,
        {k: v for k, v in request.evidence.items() if k not in ("gate", "fairness")},
        {"approved_by": approvers, "request_seq": request.request_seq},
    )
    decision.outcome = "promoted"
    decision.champion_after = version
    decision.records.append(event.seq)
    decision.message = (
        f"approved by {', '.join(approvers)}: {CHAMPION} -> {version} (was {before or 'none'})"
    )
    return decision


def reject(
    trail: AuditTrail,
    registry: Registry,
    version: str,
    actor: Actor,
    comment: str,
    cfg: ApprovalsConfig,
    now: datetime | None = None,
) -> Decision:
    """End ``version``'s request: it stays registered and loses ``challenger``."""
    del cfg  # the same call as approve()'s; a rejection needs no count
    now = now or datetime.now(UTC)
    _check_actor(actor, "rejecting")
    text = _check_comment(comment, "a rejection")
    request = _open_request(trail, registry, str(version), now)
    record = registry.record(
        "reject", actor, {"version": request.version, "request_seq": request.request_seq}, {}, text
    )
    registry.drop_challenger(request.version)
    champion = registry.alias_version(CHAMPION)
    return Decision(
        version=request.version,
        action="reject",
        outcome="rejected",
        approvals=[v.by for v in request.approvals],
        required=request.required,
        champion_before=champion,
        champion_after=champion,
        message=f"version {request.version} rejected by {actor.name}; {CHAMPION} stays "
        f"{champion or 'unset'}",
        records=[record.seq],
    )


# --- for people -----------------------------------------------------------------------------


def pending_text(requests: list[Pending]) -> str:
    """``plumbline approvals``: each open request with its evidence."""
    blocks = []
    for p in requests:
        ev = p.evidence
        gate = ev.get("gate") or {}
        lines = [
            f"{p.model!r} version {p.version}: {len(p.approvals)} of {p.required} approvals; "
            f"by {p.author} at {p.requested_at}; expires {p.expires_at}",
            f"  gate: {gate.get('summary', '-')} (champion then: {p.champion_at_gate or 'none'})",
        ]
        for c in gate.get("checks") or []:
            value = "missing" if c["value"] is None else f"{c['value']:.4f}"
            lines.append(
                f"    {'pass' if c['passed'] else 'FAIL'}  {c['check']:<22} {value} {c['needs']}"
            )
        for name, s in (ev.get("fairness") or {}).items():
            lines.append(
                f"  fairness {name}: demographic parity difference "
                f"{s.get('demographic_parity_difference')}, equalized odds difference "
                f"{s.get('equalized_odds_difference')}"
            )
        rollout = ev.get("rollout_verdict")
        if rollout:
            lines.append(f"  rollout verdict ({rollout['at']}): {rollout.get('comment', '')}")
        lines.append(
            f"  evidence: gate.json sha256 {ev.get('gate_json_sha256')}, model card sha256 "
            f"{ev.get('model_card_sha256')}"
        )
        for path, md5 in (ev.get("dvc_lock") or {}).items():
            lines.append(f"    dvc.lock {path} md5 {md5}")
        for v in p.approvals:
            lines.append(f"  approved by {v.by} ({v.via}) at {v.at}: {v.comment}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
