"""The console in real headless Chromium, against the real server, monitor, MLflow registry,
Prometheus and Alertmanager processes, with every request outside 127.0.0.1 blocked (and
none attempted): an approver approves a pending version and the server answers with it; a
viewer sees no controls and a forged POST is refused and recorded; an operator switches the
rollout to shadow and back and the server agrees.

Set PLUMBLINE_CONSOLE_SCREENSHOT=docs/console.png to write the page's screenshot for the
docs (as `make docs-screenshot` does)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from support.browser import CHROMIUM, OfflinePage, offline_page
from support.cli import in_project, ok
from support.monitoring import (
    ALERTMANAGER,
    PROMETHEUS,
    AlertmanagerProcess,
    MonitorProcess,
    Project,
    PrometheusProcess,
    live_records,
    operator_token,
    user_token,
)
from support.params import set_params
from support.serve import ADMIN_TOKEN, Server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium (.ci/run installs it)"),
    pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus (.ci/run installs it)"),
]

TRAFFIC = 300


@dataclass
class Stack:
    project: Project
    server: Server
    monitor: MonitorProcess
    prometheus: PrometheusProcess
    tokens: dict[str, str]

    @property
    def console(self) -> str:
        return self.monitor.url + "/console"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("console") / "project"
    # The page's parts refresh every 2 s here (15 by default).
    project = Project(root, {"monitor": {"console": {"refresh_s": 2}}})
    project.promote_current()  # version 1: the champion, before approvals are required
    set_params(root, **{"promotion.approvals.required": 1})
    with in_project(root, project.store):
        set_params(root, **{"train.logistic_regression.C": 0.5})
        ok("train")
        ok("evaluate", "--no-mlflow")
        ok("gate")
        ok("promote")  # passes the gate, waits for one approval
    tokens = {
        name: user_token(root, project.params, name, role)
        for name, role in (("ana", "approver"), ("victor", "viewer"), ("olga", "operator"))
    }
    governance = f"sqlite:///{root / 'logs/governance/governance.sqlite'}"
    server = project.server()
    # One governance database for the server and the monitor, as in the compose stack.
    server.extra_env["PLUMBLINE_AUDIT_URL"] = governance
    with server:
        server.wait("/ready")
        monitor_env = {
            "PLUMBLINE_SERVER_URL": server.url,
            "PLUMBLINE_ADMIN_TOKEN": ADMIN_TOKEN,
            "PLUMBLINE_AUDIT_URL": governance,
        }
        monitor = MonitorProcess(project, env=monitor_env)
        prometheus = PrometheusProcess(
            root / "prometheus", server.url.split("//")[1], monitor.url.split("//")[1]
        )
        monitor_env["PLUMBLINE_PROMETHEUS_URL"] = prometheus.url
        alertmanager = None
        if ALERTMANAGER:
            alertmanager = AlertmanagerProcess(
                root / "alertmanager", monitor.url, operator_token(root, project.params)
            )
            monitor_env["PLUMBLINE_ALERTMANAGER_URL"] = alertmanager.url
        with monitor, prometheus:
            if alertmanager is not None:
                alertmanager.start()
            try:
                records, labels = live_records(0, TRAFFIC)
                answers = [server.post(r).json() for r in records]
                outcomes = [
                    {"request_id": a["request_id"], "outcome": y}
                    for a, y in zip(answers, labels, strict=True)
                ]
                time.sleep(2.5)  # the log's files rotate each second; the monitor reads them
                monitor.refresh()
                assert monitor.feedback(outcomes).status_code == 200
                monitor.refresh()
                yield Stack(project, server, monitor, prometheus, tokens)
            finally:
                if alertmanager is not None:
                    alertmanager.stop()


def sign_in(offline: OfflinePage, stack: Stack, who: str) -> Any:
    page = offline.page
    page.goto(stack.console)
    page.get_by_label("Personal token").fill(stack.tokens[who])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#who")
    assert page.locator("#who").inner_text() == who
    return page


def champion(stack: Stack) -> str | None:
    version: str | None = stack.project.registry().alias_version("champion")
    return version


def served_version(stack: Stack) -> str:
    records, _ = live_records(TRAFFIC, 1)
    return str(stack.server.post(records[0]).json()["model_version"])


def test_an_approver_approves_and_the_server_answers_with_the_new_version(
    stack: Stack, tmp_path: Path
) -> None:
    assert champion(stack) == "1"
    assert served_version(stack) == "1"
    with offline_page() as offline:
        page = sign_in(offline, stack, "ana")
        pending = page.locator('article.pending[data-version="2"]')
        assert pending.count() == 1
        gate = pending.locator("table.gate tr")
        assert gate.count() >= 2  # a header and at least one check
        assert "pass" in gate.nth(1).inner_text()
        # Every part of the page rendered, with charts drawn from Prometheus.
        for part in ("models", "approvals", "rollout", "live", "alerts", "timeline"):
            assert page.locator(f"section#{part} > h2").count() == 1, part
        assert page.locator("#live figure").count() >= 4
        screenshot = os.environ.get("PLUMBLINE_CONSOLE_SCREENSHOT")
        page.screenshot(path=screenshot or str(tmp_path / "console.png"))

        comment = "Gate table and fairness slices checked; ROC AUC within the margin"
        pending.get_by_label(re.compile("Comment")).fill(comment)
        pending.get_by_role("button", name="Approve version 2").click()
        page.wait_for_selector("#notice")
        assert "champion" in page.locator("#notice").inner_text()
        assert champion(stack) == "2"
        deadline = time.monotonic() + 30
        while served_version(stack) != "2":
            assert time.monotonic() < deadline, "the server still answers with version 1"
            time.sleep(0.5)
        # The timeline names the approver and the comment.
        rows = page.locator("#timeline tr.act-approve")
        assert rows.count() >= 1
        assert "ana" in rows.first.inner_text() and comment in rows.first.inner_text()
        assert page.locator('article.version[data-version="2"] .badge.champion').count() == 1
        assert offline.blocked == []


def test_a_viewer_sees_no_controls_and_a_forged_post_is_refused_and_recorded(
    stack: Stack,
) -> None:
    with offline_page() as offline:
        page = sign_in(offline, stack, "victor")
        # The first Tab reaches the skip link; the parts refresh without a reload.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
        page.wait_for_selector("main[data-refreshed]", timeout=15_000)
        assert page.locator("#updated").inner_text().startswith("Updated ")
        forms = page.locator("form").evaluate_all("fs => fs.map(f => f.getAttribute('action'))")
        assert forms == ["/console/signout"]
        assert page.locator("#main button").count() == 0
        csrf = page.locator('form[action="/console/signout"] input[name=csrf_token]')
        token = csrf.get_attribute("value")
        forged = page.request.post(
            stack.console + "/rollout", form={"csrf_token": token or "", "mode": "shadow"}
        )
        assert forged.status == 403 and "role operator needed" in forged.text()
        no_csrf = page.request.post(stack.console + "/rollout", form={"mode": "shadow"})
        assert no_csrf.status == 403 and "CSRF" in no_csrf.text()
        assert offline.blocked == []
    refused = [
        r
        for r in stack.project.registry().trail.records(actions=["refused"])
        if r.subject.get("route") == "/console/rollout"
    ]
    assert [(r.actor, r.evidence.get("needs")) for r in refused[-2:]] == [
        ("victor", "operator"),
        ("victor", None),
    ]
    status = requests.get(
        stack.server.url + "/admin/rollout",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    ).json()
    assert status["mode"] == "off"


def test_a_post_from_another_site_without_the_page_s_token_is_refused(stack: Stack) -> None:
    """A cross-site form would carry no CSRF token (and, SameSite=Strict, no cookie)."""
    session = requests.Session()
    answer = session.post(
        stack.console + "/rollout",
        data={"mode": "shadow"},
        headers={"Authorization": f"Bearer {stack.tokens['olga']}"},
        timeout=10,
    )
    assert answer.status_code == 403 and "CSRF" in answer.text


def test_an_operator_switches_the_rollout_to_shadow_and_back(stack: Stack) -> None:
    def server_mode() -> str:
        answer = requests.get(
            stack.server.url + "/admin/rollout",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        return str(answer.json()["mode"])

    with offline_page() as offline:
        page = sign_in(offline, stack, "olga")
        assert page.locator("form.decide").count() == 0  # approving is not an operator's
        for mode in ("shadow", "off"):
            page.get_by_label("Mode", exact=True).select_option(mode)
            page.get_by_role("button", name="Switch rollout").click()
            page.wait_for_selector("#notice")
            assert page.locator("#notice").inner_text() == f"rollout: {mode}"
            assert server_mode() == mode
            assert page.locator("#rollout-mode").inner_text() == mode
        assert offline.blocked == []
    modes = [
        (r.actor, r.subject.get("to"))
        for r in stack.project.registry().trail.records(actions=["rollout_mode"])
    ]
    assert modes[-2:] == [("olga", "shadow"), ("olga", "off")]


def test_an_approver_rolls_back_with_a_reason_and_the_server_follows(stack: Stack) -> None:
    assert champion(stack) == "2"  # approved in the first test
    with offline_page() as offline:
        page = sign_in(offline, stack, "ana")
        form = page.locator("form.rollback")
        assert form.get_by_role("button").inner_text() == "Roll back to version 1"
        form.get_by_label(re.compile("Why roll back")).fill("live ROC AUC below version 1's")
        form.get_by_role("button").click()  # unconfirmed: the browser asks for the checkbox
        assert champion(stack) == "2"
        form.get_by_label(re.compile("I confirm")).check()
        form.get_by_role("button").click()
        page.wait_for_selector("#notice")
        assert "rolled back from 2 to 1" in page.locator("#notice").inner_text()
        assert offline.blocked == []
    assert champion(stack) == "1"
    deadline = time.monotonic() + 30
    while served_version(stack) != "1":
        assert time.monotonic() < deadline, "the server still answers with version 2"
        time.sleep(0.5)
    (record,) = stack.project.registry().trail.records(actions=["rollback"])
    assert (record.actor, record.comment) == ("ana", "live ROC AUC below version 1's")
