"""Call an ASGI app in-process (no server, no socket): one request, the whole response."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode


@dataclass
class AsgiResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    header_list: list[tuple[str, str]] = field(default_factory=list)  # repeated ones too

    def json(self) -> Any:
        return json.loads(self.body)

    def cookies(self) -> dict[str, str]:
        """The cookies the response sets (name: value; a deleted one has value "")."""
        out = {}
        for name, value in self.header_list:
            if name == "set-cookie":
                key, _, rest = value.partition("=")
                out[key] = rest.split(";", 1)[0].strip('"')
        return out


def call(
    app: Any,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    client: str = "127.0.0.1",
    form: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
) -> AsgiResponse:
    """``path`` may carry a query string; ``client`` is the peer address the app sees;
    ``form`` is sent url-encoded, as a browser sends a form."""
    path, _, query = path.partition("?")
    payload = b"" if body is None else json.dumps(body).encode()
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if body is not None:
        raw_headers.append((b"content-type", b"application/json"))
    if form is not None:
        payload = urlencode(form).encode()
        raw_headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    if cookies:
        raw_headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw_headers,
        "scheme": "http",
        "server": ("testserver", 80),
        "client": (client, 1),
        "root_path": "",
    }
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return AsgiResponse(
        status=start["status"],
        headers={k.decode(): v.decode() for k, v in start.get("headers", [])},
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        header_list=[(k.decode(), v.decode()) for k, v in start.get("headers", [])],
    )
