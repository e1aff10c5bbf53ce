"""Debian's Chromium, headless, driven by Playwright (no browser download: the package's
``executable_path``), with every request that leaves 127.0.0.1 blocked and recorded."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LOCAL_HOSTS = {"127.0.0.1"}


@dataclass
class OfflinePage:
    """A page whose requests outside 127.0.0.1 are aborted; ``blocked`` lists them."""

    page: Any
    blocked: list[str] = field(default_factory=list)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlparse(url).scheme in ("data", "blob") or urlparse(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()


@contextmanager
def offline_page(viewport: tuple[int, int] = (1366, 900)) -> Iterator[OfflinePage]:
    """A new page in headless Chromium, a laptop's screen wide, cut off from the internet."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Debian's chromium is not installed (.ci/run installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            offline = OfflinePage(context.new_page())
            context.route("**/*", offline._route)
            yield offline
        finally:
            browser.close()
