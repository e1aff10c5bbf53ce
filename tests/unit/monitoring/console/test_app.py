"""The console's rules, in process: sign-in with a personal token into an HttpOnly,
SameSite=Strict cookie; a revoked token ends the session; every POST needs the page's CSRF
token and the role, and each refusal is an audit record; what people wrote is escaped; the
page loads nothing from another host; a part that cannot be read says why instead of failing
the page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from support.asgi import AsgiResponse, call
from support.paths import REPO

from plumbline.governance.identity import Actor, Authenticator, Users
from plumbline.governance.settings import ApprovalsConfig, AuthConfig
from plumbline.governance.trail import AuditTrail
from plumbline.monitoring.console.app import Console, install
from plumbline.monitoring.console.session import NONCE_COOKIE, SESSION_COOKIE, Sessions
from plumbline.monitoring.console.view import Sources, Verifier, VersionCache
from plumbline.monitoring.monitor import Snapshot
from plumbline.monitoring.settings import ConsoleConfig, load_params


def _unreachable() -> dict[str, Any]:
    raise ConnectionError("server down")


class Stack:
    def __init__(self, tmp_path: Path) -> None:
        params = load_params(REPO / "params.yaml")
        console = ConsoleConfig(prometheus_url=None, alertmanager_url=None)
        params = params.model_copy(
            update={"monitor": params.monitor.model_copy(update={"console": console})}
        )
        self.trail = AuditTrail(f"sqlite:///{tmp_path / 'gov.sqlite'}")
        self.users = Users(self.trail.engine)
        self.app = FastAPI()
        sources = Sources(
            params=params,
            trail=self.trail,
            registry=None,
            snapshot=Snapshot,
            rollout_report=lambda: {"report": None, "decision": None},
            server_rollout=_unreachable,
        )
        install(
            self.app,
            Console(
                sessions=Sessions(Authenticator(self.users, AuthConfig()), secret=b"k" * 32),
                sources=sources,
                approvals=ApprovalsConfig(),
                server_url="http://127.0.0.1:9",
                cache=VersionCache(),
                verifier=Verifier(self.trail, 3600),
            ),
        )

    def sign_in(self, token: str) -> dict[str, str]:
        form = call(self.app, "GET", "/console")
        assert form.status == 200 and "Personal token" in form.body.decode()
        nonce = form.cookies()[NONCE_COOKIE]
        answer = call(
            self.app,
            "POST",
            "/console/signin",
            form={"csrf_token": csrf_of(form), "token": token},
            cookies={NONCE_COOKIE: nonce},
        )
        assert answer.status == 303, answer.body
        cookie = next(v for k, v in answer.header_list if v.startswith(SESSION_COOKIE))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        return {SESSION_COOKIE: answer.cookies()[SESSION_COOKIE]}


def csrf_of(page: AsgiResponse) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.body.decode())
    assert found, page.body.decode()[:500]
    return found.group(1)


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(tmp_path)


def test_sign_in_shows_the_page_and_a_revoked_token_ends_the_session(stack: Stack) -> None:
    token_id, token = stack.users.add("ana", "approver")
    cookies = stack.sign_in(token)
    page = call(stack.app, "GET", "/console", cookies=cookies)
    text = page.body.decode()
    assert page.status == 200 and 'id="who">ana<' in text
    # Nothing the page loads comes from another host; it runs only its own script.
    assert not re.search(r"""(?:src|href)="(?:https?:)?//(?!127\.0\.0\.1)""", text.split("<nav")[0])
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/console/static/console.css", "/console/static/console.js"):
        assert call(stack.app, "GET", asset).status == 200, asset
    # Parts that cannot be read say why; the page still renders.
    assert "server down" in text and "no model registry" in text

    stack.users.revoke(token_id)
    again = call(stack.app, "GET", "/console", cookies=cookies)
    assert again.status == 401 and "Personal token" in again.body.decode()
    assert call(stack.app, "GET", "/console/sections", cookies=cookies).status == 401


def test_a_wrong_token_or_a_stale_form_does_not_sign_in(stack: Stack) -> None:
    form = call(stack.app, "GET", "/console")
    nonce = form.cookies()[NONCE_COOKIE]
    wrong = call(
        stack.app,
        "POST",
        "/console/signin",
        form={"csrf_token": csrf_of(form), "token": "plb_nope_nope"},
        cookies={NONCE_COOKIE: nonce},
    )
    assert wrong.status == 401 and SESSION_COOKIE not in wrong.cookies()
    stale = call(
        stack.app,
        "POST",
        "/console/signin",
        form={"csrf_token": "forged", "token": stack.users.add("ana", "admin")[1]},
        cookies={NONCE_COOKIE: nonce},
    )
    assert stale.status == 403 and SESSION_COOKIE not in stale.cookies()


def test_posts_need_the_csrf_token_and_the_role_and_refusals_are_recorded(stack: Stack) -> None:
    _, viewer = stack.users.add("victor", "viewer")
    cookies = stack.sign_in(viewer)
    page = call(stack.app, "GET", "/console", cookies=cookies)
    text = page.body.decode()
    # A viewer gets no control but signing out.
    assert re.findall(r'<form method="post" action="([^"]+)"', text) == ["/console/signout"]
    csrf = csrf_of(page)
    for path, form in (
        ("/console/rollout", {"mode": "shadow"}),
        ("/console/rollback", {"reason": "x", "confirm": "yes", "from": "2"}),
        ("/console/approvals/2/approve", {"comment": "ok"}),
    ):
        forged = call(stack.app, "POST", path, form={**form, "csrf_token": csrf}, cookies=cookies)
        assert forged.status == 403 and "role" in forged.body.decode(), path
        no_token = call(stack.app, "POST", path, form=form, cookies=cookies)
        assert no_token.status == 403 and "CSRF" in no_token.body.decode(), path
    # Another site's form arrives without the SameSite cookie: 401, and no record, so nobody
    # outside can fill the trail.
    anonymous = call(stack.app, "POST", "/console/rollout", form={"mode": "shadow"})
    assert anonymous.status == 401 and "www-authenticate" in anonymous.headers
    refused = [(r.actor, r.subject["route"], r.comment) for r in stack.trail.records()]
    assert len(refused) == 6
    assert refused[0] == ("victor", "/console/rollout", "role operator needed; victor is viewer")
    assert refused[1] == ("victor", "/console/rollout", "missing or invalid CSRF token")
    # A token that is not ASCII, or a body larger than any form of the page, is refused too.
    for form in ({"mode": "off", "csrf_token": "ünïcode"}, {"mode": "off", "pad": "x" * 70_000}):
        odd = call(stack.app, "POST", "/console/rollout", form=form, cookies=cookies)
        assert odd.status == 403 and "CSRF" in odd.body.decode()
    # Another session's token is not this one's.
    _, other = stack.users.add("olga", "operator")
    olga = stack.sign_in(other)
    crossed = call(
        stack.app,
        "POST",
        "/console/rollout",
        form={"mode": "off", "csrf_token": csrf},
        cookies=olga,
    )
    assert crossed.status == 403 and "CSRF" in crossed.body.decode()


def test_what_people_wrote_is_escaped_on_the_page(stack: Stack) -> None:
    stack.trail.append(
        "rollback",
        Actor("<b>mallory</b>", "approver", "token"),
        {"model": "m", "from": "2", "to": "1"},
        comment='<script>alert("x")</script>',
    )
    _, token = stack.users.add("ana", "viewer")
    text = call(stack.app, "GET", "/console", cookies=stack.sign_in(token)).body.decode()
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text
    assert "<b>mallory</b>" not in text and "&lt;b&gt;mallory&lt;/b&gt;" in text


def test_sections_refresh_as_json_of_html_parts(stack: Stack) -> None:
    _, token = stack.users.add("ana", "operator")
    answer = call(stack.app, "GET", "/console/sections", cookies=stack.sign_in(token))
    parts = answer.json()
    assert set(parts) == {"models", "approvals", "rollout", "live", "alerts", "timeline"}
    assert 'action="/console/rollout"' in parts["rollout"]  # an operator's control
    assert answer.headers["cache-control"] == "no-store"
