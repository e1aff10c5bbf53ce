"""``/docs`` of the server and of the monitor render in real headless Chromium with every
request outside 127.0.0.1 blocked (and none attempted): Swagger UI's assets come from the
processes themselves, and the page lists the operations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import CHROMIUM, offline_page
from support.monitoring import MonitorProcess, Project
from support.serve import Server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium (.ci/run installs it)"),
]


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, MonitorProcess]]:
    project = Project(tmp_path_factory.mktemp("docs") / "project", {})
    with project.server() as server:
        server.wait("/ready")
        with MonitorProcess(project) as monitor:
            yield server, monitor


@pytest.mark.parametrize(
    ("which", "title", "operations"),
    [
        ("server", "Plumbline prediction API", ["POST/predict", "GET/ready", "POST/admin/reload"]),
        ("monitor", "Plumbline monitor", ["POST/feedback", "GET/status", "POST/retrain"]),
    ],
)
def test_docs_render_with_no_internet_and_list_the_operations(
    processes: tuple[Server, MonitorProcess],
    which: str,
    title: str,
    operations: list[str],
    tmp_path: Path,
) -> None:
    server, monitor = processes
    url = (server if which == "server" else monitor).url
    with offline_page() as offline:
        page = offline.page
        response = page.goto(url + "/docs")
        assert response is not None and response.status == 200
        page.wait_for_selector(".opblock-summary", timeout=30_000)
        page.screenshot(path=str(tmp_path / f"{which}-docs.png"), full_page=False)
        assert page.locator(".info .title").first.inner_text().startswith(title)
        summaries = [
            text.replace("\n", "").replace(" ", "")
            for text in page.locator(".opblock-summary").all_inner_texts()
        ]
        for operation in operations:
            assert any(s.startswith(operation) for s in summaries), (operation, summaries)
        assert offline.blocked == []
