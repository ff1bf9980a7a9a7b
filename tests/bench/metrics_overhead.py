"""CPU cost of the HTTP metrics per request: the ASGI path of one trivial route through
RequestIdMiddleware and the router, with and without HttpMetricsMiddleware in front, called
in-process (no sockets, so the difference is the metrics alone). Also one streamed
response of many frames, to show the cost does not grow with the frames.

`python -m tests.bench.metrics_overhead [--requests N]` prints JSON: microseconds per
request with and without, and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message

from api.http_metrics import HttpMetricsMiddleware
from api.middleware import RequestIdMiddleware

FRAMES = 200


async def _plain(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


async def _stream(request: Request) -> Response:
    async def frames() -> AsyncIterator[bytes]:
        for _ in range(FRAMES):
            yield b"data: x\n\n"
    return StreamingResponse(frames(), media_type="text/event-stream")


def _app(with_metrics: bool) -> ASGIApp:
    router = Router(routes=[Route("/v1/jobs/{job_id}", _plain),
                            Route("/v1/stream/{job_id}", _stream)])
    app: ASGIApp = RequestIdMiddleware(router)
    return HttpMetricsMiddleware(app) if with_metrics else app


async def _drive(app: ASGIApp, path: str, n: int) -> float:
    async def receive() -> Message:
        # After the body, a client that stays: wait (a streaming response listens for a
        # disconnect, and an instant answer would make that a busy loop).
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    started = time.perf_counter()
    for i in range(n):
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": f"{path}/{i}",
                                 "raw_path": b"", "query_string": b"", "headers": [],
                                 "http_version": "1.1", "scheme": "http",
                                 "server": ("t", 80), "client": ("c", 1), "root_path": ""}
        await app(scope, receive, send)
    return (time.perf_counter() - started) / n * 1e6


async def measure(n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, path, count in (("request", "/v1/jobs", n), ("stream", "/v1/stream", n // 20)):
        bare, metered = _app(False), _app(True)
        await _drive(bare, path, 200)  # warm up: imports, label children
        await _drive(metered, path, 200)
        # Alternate runs so drift (other processes on the machine) hits both alike.
        without = min([await _drive(bare, path, count) for _ in range(5)])
        with_ = min([await _drive(metered, path, count) for _ in range(5)])
        out[f"{name}_us_without"] = round(without, 2)
        out[f"{name}_us_with"] = round(with_, 2)
        out[f"{name}_us_added"] = round(with_ - without, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.requests)), indent=2))


if __name__ == "__main__":
    main()
