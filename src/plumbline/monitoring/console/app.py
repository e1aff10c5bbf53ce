"""The console's routes on the monitor's app: ``GET /console`` (the page, or the sign-in form),
``GET /console/sections`` (its parts as HTML, for the page's refresh), and the POSTs that
change state: sign-in and sign-out, approve and reject, the rollout mode, rollback.

Every POST needs the page's CSRF token and the role on the server (a hidden button is not
security); a refusal is an audit record. Changes towards the server act as the person: the
console forwards their token (or the proxy's identity headers), so the server's own audit
record names them too.
"""

from __future__ import annotations

import html
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from plumbline.governance.identity import Actor, Forbidden, role_allows
from plumbline.governance.settings import ApprovalsConfig, Role
from plumbline.governance.trail import AuditTrail
from plumbline.monitoring.console.session import (
    CSRF_FIELD,
    NONCE_COOKIE,
    PATH,
    SESSION_COOKIE,
    Sessions,
    Visitor,
)
from plumbline.monitoring.console.view import Sources, Verifier, VersionCache, gather

log = logging.getLogger("plumbline.console")

MODES = ("off", "shadow", "canary")
MAX_FORM_BYTES = 64 * 1024
SERVER_TIMEOUT_S = 90.0


@dataclass
class Console:
    sessions: Sessions
    sources: Sources
    approvals: ApprovalsConfig
    server_url: str
    cache: VersionCache
    verifier: Verifier

    @property
    def trail(self) -> AuditTrail:
        return self.sources.trail


def _templates() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("plumbline.monitoring.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["markdown"] = _markdown
    env.filters["num"] = _num
    return env


def _markdown(text: str) -> str:
    """A model card as HTML: CommonMark with raw HTML escaped, tables on."""
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(text or ""))


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return str(value)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST; empty when it is larger than any of the page's."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def install(app: FastAPI, console: Console) -> None:
    """Add the console's routes and assets to the monitor's ``app``."""
    env = _templates()
    console.verifier.start()  # the page shows the chain's verification from its first load
    static = Path(str(resources.files("plumbline.monitoring.console") / "static"))
    app.mount(f"{PATH}/static", StaticFiles(directory=static), name="console-static")

    def visitor_of(request: Request) -> Visitor:
        return console.sessions.visitor(request.headers, request.cookies, _client(request))

    def secure(request: Request) -> bool:
        proto = request.headers.get("x-forwarded-proto", request.url.scheme)
        return proto == "https"

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        text = env.get_template(name).render(**context)
        response = HTMLResponse(text, status)
        # The page runs only its own script and styles, and is never framed.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def signin(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
        nonce = request.cookies.get(NONCE_COOKIE) or secrets.token_urlsafe(24)
        response = page(
            "signin.html",
            status,
            csrf=console.sessions.signin_csrf(nonce),
            error=error,
            proxy=console.sessions.auth.auth.proxy.enabled,
        )
        response.set_cookie(
            NONCE_COOKIE, nonce, httponly=True, samesite="strict", path=PATH, secure=secure(request)
        )
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="plumbline"'
        return response

    def context(visitor: Visitor, notice: str | None = None) -> dict[str, Any]:
        assert visitor.actor is not None
        role = visitor.actor.role
        return {
            "data": gather(console.sources, console.cache, console.verifier),
            "actor": visitor.actor,
            "csrf": console.sessions.csrf(visitor),
            "can": {need: role_allows(role, need) for need in ("operator", "approver", "admin")},
            "notice": notice,
            "modes": MODES,
        }

    @app.get(PATH, include_in_schema=False)
    def console_page(request: Request, notice: str | None = None, sig: str | None = None) -> Any:
        visitor = visitor_of(request)
        if visitor.actor is None:
            return signin(request, 401 if visitor.problem else 200, visitor.problem)
        shown = notice if notice and console.sessions.signed(notice, sig) else None
        return page("console.html", **context(visitor, shown))

    @app.get(f"{PATH}/sections", include_in_schema=False)
    def console_sections(request: Request) -> Response:
        visitor = visitor_of(request)
        if visitor.actor is None:
            return JSONResponse({"detail": "signed out"}, 401)
        macros = env.get_template("sections.html").module
        ctx = context(visitor)
        names = ("models", "approvals", "rollout", "live", "alerts", "timeline")
        args = {k: ctx[k] for k in ("data", "actor", "csrf", "can", "modes")}
        body = {name: str(getattr(macros, name)(**args)) for name in names}
        response = JSONResponse(body)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.post(f"{PATH}/signin", include_in_schema=False)
    async def console_signin(request: Request) -> Response:
        form = await _form(request)
        return await run_in_threadpool(signin_post, request, form)

    def signin_post(request: Request, form: dict[str, str]) -> Response:
        nonce = request.cookies.get(NONCE_COOKIE)
        if not console.sessions.signin_ok(nonce, form.get(CSRF_FIELD)):
            return signin(request, 403, "the form expired: sign in again")
        token = (form.get("token") or "").strip()
        candidate = console.sessions.visitor(
            {"Authorization": f"Bearer {token}"} if token else {}, {}, _client(request)
        )
        if candidate.actor is None:
            return signin(request, 401, candidate.problem or "enter your personal token")
        response = RedirectResponse(PATH, 303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(console.sources.params.monitor.console.session_hours * 3600),
            httponly=True,
            samesite="strict",
            path=PATH,
            secure=secure(request),
        )
        response.delete_cookie(NONCE_COOKIE, path=PATH)
        return response

    def refused_page(reason: str, status: int) -> HTMLResponse:
        text = f"<!doctype html><title>Refused</title><p>{html.escape(reason)}</p>"
        text += f'<p><a href="{PATH}">Back to the console</a></p>'
        return HTMLResponse(text, status)

    def refuse(request: Request, actor: Actor, needs: Role | None, reason: str) -> Response:
        """403, recorded in the audit trail. Only for people who were identified: an anonymous
        request (another site's form arrives without the SameSite cookie) gets 401 and leaves
        no record, so nobody can fill the trail from outside."""
        try:
            console.trail.refusal(actor, request.url.path, request.method, needs, reason)
        except Exception:
            log.exception("could not record a refusal in the audit trail")
        return refused_page(reason, 403)

    def admitted(
        request: Request, form: dict[str, str], needs: Role
    ) -> tuple[Visitor, Actor] | Response:
        """The visitor of a POST, or the refusal: no identity, a bad CSRF token, too low a
        role."""
        visitor = visitor_of(request)
        if visitor.actor is None:
            reason = visitor.problem or "sign in first"
            response = refused_page(reason, 401)
            response.headers["WWW-Authenticate"] = 'Bearer realm="plumbline"'
            return response
        if not console.sessions.csrf_ok(visitor, form.get(CSRF_FIELD)):
            return refuse(request, visitor.actor, None, "missing or invalid CSRF token")
        if not role_allows(visitor.actor.role, needs):
            reason = f"role {needs} needed; {visitor.actor.name} is {visitor.actor.role}"
            return refuse(request, visitor.actor, needs, reason)
        return visitor, visitor.actor

    def done(notice: str) -> RedirectResponse:
        query = urlencode({"notice": notice, "sig": console.sessions.sign(notice)})
        return RedirectResponse(f"{PATH}?{query}", 303)

    def server_post(visitor: Visitor, path: str, body: dict[str, Any] | None) -> str | None:
        """POST to the server as the visitor; None when it answered 200, else why not."""
        import requests

        try:
            answer = requests.post(
                console.server_url.rstrip("/") + path,
                json=body,
                headers=visitor.credentials,
                timeout=SERVER_TIMEOUT_S,
            )
        except requests.RequestException as err:
            return f"the server is unreachable ({type(err).__name__})"
        if answer.status_code != 200:
            return f"the server answered {answer.status_code}: {answer.text[:200]}"
        return None

    Action = Callable[[Request, dict[str, str], Visitor, Actor], Response]

    def post(needs: Role, what: str, action: Action) -> Callable[..., Any]:
        """A state-changing route: the form is read on the event loop, everything else (the
        database, MLflow, the server) runs in a worker thread, so the monitor keeps answering
        /health and /feedback meanwhile. A failure becomes a notice on the page."""

        async def route(request: Request) -> Response:
            form = await _form(request)
            return await run_in_threadpool(guarded, request, form)

        def guarded(request: Request, form: dict[str, str]) -> Response:
            try:
                got = admitted(request, form, needs)
                if isinstance(got, Response):
                    return got
                return action(request, form, *got)
            except Exception as err:
                log.exception("console: %s failed", what)
                return done(f"{what} failed: {type(err).__name__}: {str(err)[:200]}")

        return route

    def signout(request: Request, form: dict[str, str], visitor: Visitor, actor: Actor) -> Response:
        response = RedirectResponse(PATH, 303)
        response.delete_cookie(SESSION_COOKIE, path=PATH)
        return response

    def decide(action: str) -> Action:
        def run(request: Request, form: dict[str, str], visitor: Visitor, actor: Actor) -> Response:
            from plumbline.promotion import approvals

            version = request.path_params["version"]
            comment = (form.get("comment") or "").strip()
            if not comment:
                return done(f"{action} of version {version} needs a comment: nothing recorded")
            if console.sources.registry is None:
                return done("no model registry: nothing recorded")
            step = approvals.approve if action == "approve" else approvals.reject
            try:
                decision = step(
                    console.trail,
                    console.sources.registry(),
                    version,
                    actor,
                    comment,
                    console.approvals,
                )
            except Forbidden as err:  # separation of duties: approvals recorded the refusal
                return refused_page(str(err), 403)
            except approvals.ApprovalError as err:
                return done(f"version {version}: {err}")
            console.cache.clear()
            notice = decision.message
            if decision.outcome == "promoted":
                problem = server_post(visitor, "/admin/reload", None)
                notice += "; the server " + (
                    f"did not reload: {problem}" if problem else "reloaded"
                )
            return done(notice)

        return run

    def rollout(request: Request, form: dict[str, str], visitor: Visitor, actor: Actor) -> Response:
        mode = form.get("mode", "")
        if mode not in MODES:
            return done(f"unknown rollout mode {mode!r}: one of {', '.join(MODES)}")
        body: dict[str, Any] = {"mode": mode}
        if mode == "canary" and form.get("canary_fraction"):
            try:
                body["canary_fraction"] = float(form["canary_fraction"])
            except ValueError:
                return done(f"canary share {form['canary_fraction']!r} is not a number")
        problem = server_post(visitor, "/admin/rollout", body)
        return done(f"rollout mode not changed: {problem}" if problem else f"rollout: {mode}")

    def rollback(
        request: Request, form: dict[str, str], visitor: Visitor, actor: Actor
    ) -> Response:
        reason = (form.get("reason") or "").strip()
        if form.get("confirm") != "yes" or not reason:
            return done("rollback needs a reason and the confirmation: nothing changed")
        if console.sources.registry is None:
            return done("no model registry: nothing changed")
        registry = console.sources.registry()
        current = registry.alias_version("champion")
        if current != form.get("from"):
            return done(
                f"the champion is now {current}, not {form.get('from')}: reload the page "
                "and check before rolling back"
            )
        event = registry.rollback(reason, actor)
        console.cache.clear()
        problem = server_post(visitor, "/admin/reload", None)
        return done(
            f"champion rolled back from {event.from_version} to {event.to_version}; the server "
            + (f"did not reload: {problem}" if problem else "reloaded")
        )

    routes: list[tuple[str, Role, str, Action]] = [
        (f"{PATH}/signout", "viewer", "sign-out", signout),
        (PATH + "/approvals/{version}/approve", "approver", "approval", decide("approve")),
        (PATH + "/approvals/{version}/reject", "approver", "rejection", decide("reject")),
        (f"{PATH}/rollout", "operator", "the rollout switch", rollout),
        (f"{PATH}/rollback", "approver", "rollback", rollback),
    ]
    for path, needs, what, action in routes:
        app.add_api_route(
            path, post(needs, what, action), methods=["POST"], include_in_schema=False
        )
