"""Governance's part of params.yaml: ``audit:`` (where the trail lives, how long it is kept),
``auth:`` (who is who: an authenticating proxy, the deprecated single tokens) and ``promotion:``
(approvals before ``@champion`` moves)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from plumbline.core.settings import StrictModel

# Ordered: each role includes the ones before it.
Role = Literal["viewer", "operator", "approver", "admin"]


class AuditConfig(StrictModel):
    """The audit trail (docs/governance.md): one hash-chained record per state change, in a SQL
    database that ``plumbline audit verify`` checks end to end."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the governance database; null = the SQLite file "
        "logs/governance/governance.sqlite in the project; the variable PLUMBLINE_AUDIT_URL "
        "overrides both",
    )
    retain_days: int = Field(
        default=760,
        ge=180,
        description="Days `plumbline audit prune` keeps records for: 760 covers the 25 months "
        "of ECOA/Regulation B; the EU AI Act asks for at least 6 months",
    )


class ProxyAuthConfig(StrictModel):
    """An authenticating reverse proxy in front (oauth2-proxy, a company gateway): it names the
    user in a header, which is believed only from the proxy's own addresses."""

    enabled: bool = Field(default=False, description="Accept the proxy's identity headers")
    user_header: str = Field(
        default="X-Forwarded-User", description="Header that names the authenticated user"
    )
    groups_header: str = Field(
        default="X-Forwarded-Groups", description="Header with the user's groups, comma-separated"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="IP addresses or CIDR networks the headers are accepted from; the same "
        "header from any other address is refused",
    )
    roles: dict[str, Role] = Field(
        default_factory=dict,
        description='Role per user ("alice") or group ("group:risk-team"); the highest match '
        "wins, a user with none is refused",
    )


class AuthConfig(StrictModel):
    """Who may do what: personal tokens (`plumbline users`) or a proxy in front; roles are
    viewer, operator, approver and admin, each including the ones before it."""

    proxy: ProxyAuthConfig = Field(
        default=ProxyAuthConfig(), description="Identity from an authenticating proxy"
    )
    legacy_tokens: bool = Field(
        default=True,
        description="Deprecated: the single tokens of serve.admin_token_env and "
        "monitor.token_env still act as an operator (named legacy-admin-token and "
        "legacy-monitor-token)",
    )


class ApprovalsConfig(StrictModel):
    """People who must approve a candidate that passed the gate before it becomes champion."""

    required: int = Field(
        default=0,
        ge=0,
        description="Approvals needed; 0 = a passing gate moves @champion at once",
    )
    separation_of_duties: bool = Field(
        default=True,
        description="Whoever produced the candidate (ran `promote`, or the retrain that made it) "
        "cannot approve it",
    )
    expire_after_days: float = Field(
        default=14.0, gt=0, description="Pending approval requests expire after this many days"
    )


class PromotionConfig(StrictModel):
    """Governed promotion: what must happen between a passing gate and ``@champion``."""

    approvals: ApprovalsConfig = Field(
        default=ApprovalsConfig(), description="Approvals before the champion moves"
    )
