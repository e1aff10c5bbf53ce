"""The floor of the serving benchmark: a raw ASGI app on uvicorn that reads the request body and
answers a fixed prediction, with as many HTTP processes as the server has. Nothing can serve
a POST on this machine faster through uvicorn; the ratio to it shows what the server's own work
(validation, the queue hop, scoring, encoding, logging) costs.

    python benchmarks/floor_app.py --port 8002 --workers 2
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

BODY = (
    b'{"probability":0.0814,"label":0,"model_name":"plumbline-bench",'
    b'"model_version":"1","request_id":"c3fcfea6354c4c8da92314a3ed257448"}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole body, as any real handler must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    uvicorn.run(
        "floor_app:app",
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        app_dir=str(__import__("pathlib").Path(__file__).parent),
    )


if __name__ == "__main__":
    main()
