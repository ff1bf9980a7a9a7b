"""The operator dashboard: one static page whose script follows the live feed
(`GET /v1/admin/live`, api/routes/dashboard_live.py) and reads the admin JSON routes.

The page itself holds no data, so it is served without a credential (a browser cannot
send a Bearer header on navigation); everything it shows comes from `/v1` routes that
check the caller's role (admin, operator or viewer; only the first two can act). The CSP
allows only this origin's own script and style (and `connect-src 'self'` for the feed), so
nothing a job's input or error contains can run as code in an operator's browser.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

_PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Always revalidate: a stale script against a newer API is worse than one more request.
    "Cache-Control": "no-cache",
}


async def dashboard(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers=_PAGE_HEADERS)


routes: list[BaseRoute] = [
    Route("/dashboard", dashboard, methods=["GET"], include_in_schema=False),
    Mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
]
