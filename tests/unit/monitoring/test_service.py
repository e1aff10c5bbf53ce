"""The monitor's guarded routes (in-process): who may post feedback and alerts, start a
retrain, approve or reject a candidate and read the audit trail; each refusal recorded; and
the OpenAPI document saying so."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support.asgi import call

from plumbline.governance.identity import ROLES, Actor, Authenticator, Users, role_allows
from plumbline.governance.settings import ApprovalsConfig, AuthConfig, ProxyAuthConfig, Role
from plumbline.governance.trail import AuditTrail
from plumbline.monitoring.retrain import Decision
from plumbline.monitoring.service import Governance, create_app
from plumbline.monitoring.store import FeedbackResult

MODEL = "plumbline-classifier"


class _Retrainer:
    def __init__(self) -> None:
        self.triggers: list[str] = []

    def abort(self) -> None: ...

    def wait(self, timeout: float) -> None: ...

    def request(self, trigger: str, force: bool = False) -> tuple[Decision, None]:
        self.triggers.append(trigger)
        return Decision("cooldown", "test"), None


class _Monitor:
    """What /feedback, /alerts and /status read."""

    def __init__(self) -> None:
        self.params = SimpleNamespace(
            retrain=SimpleNamespace(trigger_alerts=["Drift"]),
            monitor=SimpleNamespace(console=SimpleNamespace(enabled=False)),
        )
        self.posted: list[Any] = []
        self.snapshot = SimpleNamespace(to_dict=dict)
        self.store = SimpleNamespace(retrains=lambda limit: [])

    def count(self, key: str, n: int = 1) -> None: ...

    def counter_values(self) -> dict[str, int]:
        return {}

    def outcome_value(self, outcome: Any) -> int:
        return int(outcome)

    def feedback(self, outcomes: list[Any]) -> FeedbackResult:
        self.posted += outcomes
        return FeedbackResult(matched=len(outcomes))


class _Registry:
    """The parts of promotion.registry.Registry that approvals use, over the real trail."""

    def __init__(self, trail: AuditTrail, champion: str = "1") -> None:
        self.trail = trail
        self.name = MODEL
        self.champion = champion
        self.challenger: str | None = None

    def record(
        self,
        action: str,
        actor: Actor,
        subject: dict[str, Any],
        evidence: dict[str, Any] | None = None,
        comment: str = "",
    ) -> Any:
        return self.trail.append(action, actor, {"model": self.name, **subject}, evidence, comment)

    def alias_version(self, alias: str) -> str | None:
        return self.champion

    def drop_challenger(self, version: str) -> None:
        self.challenger = None

    def set_champion(
        self,
        version: str,
        action: str,
        reason: str,
        actor: Actor,
        evidence: dict[str, Any],
        extra: dict[str, Any],
    ) -> Any:
        before, self.champion = self.champion, version
        return self.record(action, actor, {"version": version, "from": before, "to": version})


class _Stack:
    def __init__(
        self,
        tmp_path: Path,
        auth: AuthConfig | None = None,
        legacy: dict[str, tuple[str, Role]] | None = None,
        required: int = 1,
    ) -> None:
        self.trail = AuditTrail(f"sqlite:///{tmp_path / 'governance.sqlite'}")
        self.users = Users(self.trail.engine)
        self.registry = _Registry(self.trail)
        self.governance = Governance(
            Authenticator(self.users, auth or AuthConfig(), legacy),
            self.trail,
            ApprovalsConfig(required=required),
            lambda: self.registry,
        )
        self.monitor = _Monitor()
        self.retrainer = _Retrainer()
        self.app = create_app(
            self.monitor,  # type: ignore[arg-type]
            self.retrainer,  # type: ignore[arg-type]
            self.governance,
            refresh_loop=False,
        )
        self.tokens = {role: self.users.add(f"u-{role}", role)[1] for role in ROLES}

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def request_approval(self, version: str, author: str = "monitor") -> None:
        self.trail.append(
            "approval_requested",
            Actor(author, "operator", "system"),
            {
                "model": MODEL,
                "version": version,
                "required": 1,
                "separation_of_duties": True,
                "champion_at_gate": "1",
                "expires_at": "2999-01-01T00:00:00.000000Z",
            },
            {"gate": {"passed": True, "summary": "passed"}, "gate_json_sha256": "ab"},
        )


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLUMBLINE_AUDIT_URL", raising=False)


# Each guarded route, a body it accepts, the role it needs and what it answers when allowed.
ROUTES: list[tuple[str, str, Any, str, int]] = [
    ("POST", "/feedback", {"request_id": "r", "outcome": 1}, "operator", 200),
    ("POST", "/alerts", {"alerts": []}, "operator", 200),
    ("POST", "/retrain", None, "operator", 200),
    ("GET", "/approvals", None, "viewer", 200),
    ("POST", "/approvals/7/approve", {"comment": "looked at the gate"}, "approver", 404),
    ("POST", "/approvals/7/reject", {"comment": "fairness gap"}, "approver", 404),
    ("GET", "/audit?last=5", None, "viewer", 200),
    ("GET", "/audit/verify", None, "viewer", 200),
]


@pytest.mark.parametrize(("method", "route", "body", "needs", "allowed"), ROUTES)
def test_each_guarded_route_needs_a_credential_and_its_role(
    tmp_path: Path, method: str, route: str, body: Any, needs: str, allowed: int
) -> None:
    stack = _Stack(tmp_path)
    missing = call(stack.app, method, route, body)
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="plumbline"'
    wrong = call(stack.app, method, route, body, headers={"Authorization": "Bearer x"})
    assert wrong.status == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    for role in ROLES:
        answer = call(stack.app, method, route, body, headers=stack.as_(role))
        ok = role_allows(role, needs)  # type: ignore[arg-type]
        assert answer.status == (allowed if ok else 403), (role, answer.body)
    refused = stack.trail.records(actions=["refused"])
    path = route.partition("?")[0]
    lower = [r for r in ROLES if not role_allows(r, needs)]  # type: ignore[arg-type]
    assert [r.actor for r in refused] == [f"u-{r}" for r in lower]
    assert all(r.subject == {"route": path, "method": method} for r in refused)
    assert all(r.evidence["needs"] == needs for r in refused)


def test_the_allowed_calls_reach_the_monitor_and_the_retrainer(tmp_path: Path) -> None:
    stack = _Stack(tmp_path)
    op = stack.as_("operator")
    answer = call(stack.app, "POST", "/feedback", [{"request_id": "a", "outcome": 1}], op)
    assert answer.json()["matched"] == 1 and len(stack.monitor.posted) == 1
    fired = {"alerts": [{"status": "firing", "labels": {"alertname": "Drift"}}]}
    assert call(stack.app, "POST", "/alerts", fired, op).json()["outcome"] == "cooldown"
    assert call(stack.app, "POST", "/retrain?force=true", headers=op).status == 200
    assert stack.retrainer.triggers == ["alert Drift", "manual (POST /retrain by u-operator)"]


def test_refresh_and_report_need_an_operator_too(tmp_path: Path) -> None:
    stack = _Stack(tmp_path)
    for route in ("/refresh", "/report"):
        assert call(stack.app, "POST", route).status == 401, route
        assert call(stack.app, "POST", route, headers=stack.as_("viewer")).status == 403
    for route in ("/health", "/status"):  # probes and read-only figures stay open
        assert call(stack.app, "GET", route).status == 200, route


def test_revoked_and_expired_tokens_get_401(tmp_path: Path) -> None:
    stack = _Stack(tmp_path)
    token_id, token = stack.users.add("rita", "admin")
    bearer = {"Authorization": f"Bearer {token}"}
    assert call(stack.app, "GET", "/audit/verify", headers=bearer).status == 200
    stack.users.revoke(token_id)
    assert call(stack.app, "GET", "/audit/verify", headers=bearer).status == 401
    _, short = stack.users.token("rita", expires_days=1e-9)
    time.sleep(0.01)
    expired = call(stack.app, "GET", "/audit/verify", headers={"Authorization": f"Bearer {short}"})
    assert expired.status == 401
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]


def test_the_deprecated_monitor_token_is_an_operator(tmp_path: Path) -> None:
    stack = _Stack(tmp_path, legacy={"old-monitor-secret": ("legacy-monitor-token", "operator")})
    bearer = {"Authorization": "Bearer old-monitor-secret"}
    assert call(stack.app, "POST", "/retrain", headers=bearer).status == 200
    assert stack.retrainer.triggers == ["manual (POST /retrain by legacy-monitor-token)"]
    # An operator, not an approver: approving is refused and recorded.
    refused = call(stack.app, "POST", "/approvals/2/approve", {"comment": "ok"}, bearer)
    assert refused.status == 403
    (record,) = stack.trail.records(actions=["refused"])
    assert (record.actor, record.via) == ("legacy-monitor-token", "legacy-token")

    (tmp_path / "off").mkdir()
    off = _Stack(
        tmp_path / "off",
        AuthConfig(legacy_tokens=False),
        legacy={"old-monitor-secret": ("legacy-monitor-token", "operator")},
    )
    assert call(off.app, "POST", "/retrain", headers=bearer).status == 401


def test_proxy_headers_only_from_the_trusted_proxy(tmp_path: Path) -> None:
    proxy = ProxyAuthConfig(
        enabled=True, trusted_proxies=["10.0.0.5"], roles={"group:risk": "approver"}
    )
    stack = _Stack(tmp_path, AuthConfig(proxy=proxy))
    stack.request_approval("2")
    headers = {"X-Forwarded-User": "carol", "X-Forwarded-Groups": "risk"}
    body = {"comment": "gate and fairness checked"}
    spoofed = call(stack.app, "POST", "/approvals/2/approve", body, headers, client="10.0.0.6")
    assert spoofed.status == 401
    assert spoofed.headers["www-authenticate"].startswith('Bearer realm="plumbline"')
    approved = call(stack.app, "POST", "/approvals/2/approve", body, headers, client="10.0.0.5")
    assert approved.status == 200, approved.body
    assert approved.json()["outcome"] == "promoted"
    (vote,) = stack.trail.records(actions=["approve"])
    assert (vote.actor, vote.via, vote.comment) == ("carol", "proxy", body["comment"])


def test_approvals_over_http(tmp_path: Path) -> None:
    stack = _Stack(tmp_path)
    stack.request_approval("2")
    stack.request_approval("3")
    listed = call(stack.app, "GET", "/approvals", headers=stack.as_("viewer")).json()
    assert listed["required"] == 1
    assert [p["version"] for p in listed["pending"]] == ["2", "3"]
    status = call(stack.app, "GET", "/status").json()
    assert [p["version"] for p in status["approvals"]["pending"]] == ["2", "3"]

    approver = stack.as_("approver")
    blank = call(stack.app, "POST", "/approvals/2/approve", {"comment": " "}, approver)
    assert blank.status == 422
    assert call(stack.app, "POST", "/approvals/2/approve", {}, approver).status == 422
    done = call(stack.app, "POST", "/approvals/2/approve", {"comment": "fine"}, approver)
    assert done.status == 200 and done.json()["champion_after"] == "2"
    rejected = call(stack.app, "POST", "/approvals/3/reject", {"comment": "no"}, approver)
    assert rejected.status == 200 and rejected.json()["outcome"] == "rejected"
    assert call(stack.app, "GET", "/approvals", headers=approver).json()["pending"] == []
    again = call(stack.app, "POST", "/approvals/3/approve", {"comment": "x"}, approver)
    assert again.status == 404

    # Separation of duties: the author of a candidate cannot approve it.
    stack.request_approval("4", author="u-approver")
    own = call(stack.app, "POST", "/approvals/4/approve", {"comment": "mine"}, approver)
    assert own.status == 403 and "separation of duties" in own.json()["detail"]


def test_audit_routes(tmp_path: Path) -> None:
    stack = _Stack(tmp_path)
    for n in range(5):
        stack.trail.append("reload", Actor("olga", "operator", "token"), {"n": n})
    viewer = stack.as_("viewer")
    last = call(stack.app, "GET", "/audit?last=3", headers=viewer).json()["records"]
    assert [r["subject"]["n"] for r in last] == [2, 3, 4]
    assert set(last[0]) >= {"seq", "at", "actor", "via", "action", "prev_hash", "hash"}
    assert call(stack.app, "GET", "/audit?last=0", headers=viewer).status == 422
    verified = call(stack.app, "GET", "/audit/verify", headers=viewer).json()
    assert verified["ok"] is True and verified["checked"] == 5
    with stack.trail.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_records SET actor = 'eve' WHERE seq = 2")
    broken = call(stack.app, "GET", "/audit/verify", headers=viewer).json()
    assert broken["ok"] is False and broken["first_bad"] == 2


def test_without_governance_every_guarded_route_is_closed() -> None:
    app = create_app(None, _Retrainer(), None, refresh_loop=False)  # type: ignore[arg-type]
    for method, route, body, _, _ in ROUTES:
        answer = call(app, method, route, body)
        assert answer.status == 401, route
        assert answer.headers["www-authenticate"] == 'Bearer realm="plumbline"'
    assert call(app, "GET", "/health").status == 200


def test_openapi_documents_the_scheme_and_each_route_s_refusals() -> None:
    doc = create_app(None, _Retrainer(), None, refresh_loop=False).openapi()  # type: ignore[arg-type]
    scheme = doc["components"]["securitySchemes"]["monitorToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    guarded = [(m, r.partition("?")[0], n) for m, r, _, n, _ in ROUTES]
    guarded += [("POST", "/refresh", "operator"), ("POST", "/report", "operator")]
    for method, route, needs in guarded:
        route = route.replace("/7/", "/{version}/")
        op = doc["paths"][route][method.lower()]
        assert op["security"] == [{"monitorToken": []}], route
        assert {"401", "403"} <= set(op["responses"]), route
        assert needs in op["responses"]["403"]["description"], route
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"], route
    assert "security" not in doc["paths"]["/health"]["get"]
    assert "security" not in doc["paths"]["/status"]["get"]
