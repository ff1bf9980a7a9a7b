"""API-key scopes: the one table of which scope each route needs, and its enforcement.

A key with no scopes has all of its owner's rights; a key with scopes may use only the
routes whose scope it holds, and never more than its owner (a scope does not grant a
role: an `admin`-scoped key of a non-admin still gets 403 from the admin routes). Session
tokens and the bootstrap key carry no scopes. `knowledge:write` includes
`knowledge:read`.

`guard_routes` wraps each route's ASGI app once at start-up, so the check is a set lookup
per request with no I/O. A `/v1` route missing from `ROUTE_SCOPES` is refused to every
scoped key (fail closed) and named by tests/unit/test_scopes.py, which enumerates the
app's routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.context import Principal
from api.errors import error_response

CHAT = "chat"
KNOWLEDGE_READ = "knowledge:read"
KNOWLEDGE_WRITE = "knowledge:write"
JOBS = "jobs"
ACCOUNT = "account"  # API keys, passkeys, usage
DEPLOYMENTS = "deployments"
ADMIN = "admin"
# Routes any valid credential may use: who am I, log out.
ANY = ""
SCOPES = (CHAT, KNOWLEDGE_READ, KNOWLEDGE_WRITE, JOBS, ACCOUNT, DEPLOYMENTS, ADMIN)
_IMPLIED = {KNOWLEDGE_WRITE: (KNOWLEDGE_READ,)}

# (method, path template) -> scope. Path parameters compare by position, not by name.
# WebSocket routes use the method "WS".
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    # Accounts
    ("POST", "/v1/auth/login"): ANY,
    ("POST", "/v1/auth/logout"): ANY,
    ("GET", "/v1/auth/session"): ANY,
    ("POST", "/v1/auth/register"): ADMIN,
    ("POST", "/v1/auth/webauthn/register/init"): ACCOUNT,
    ("POST", "/v1/auth/webauthn/register/complete"): ACCOUNT,
    ("POST", "/v1/auth/webauthn/login/init"): ANY,
    ("POST", "/v1/auth/webauthn/login/complete"): ANY,
    ("GET", "/v1/auth/webauthn/credentials"): ACCOUNT,
    ("DELETE", "/v1/auth/webauthn/credentials/{}"): ACCOUNT,
    ("POST", "/v1/keys"): ACCOUNT,
    ("GET", "/v1/keys"): ACCOUNT,
    ("GET", "/v1/keys/validate"): ANY,
    ("DELETE", "/v1/keys/{}"): ACCOUNT,
    ("GET", "/v1/usage"): ACCOUNT,
    # Models and inference
    ("POST", "/v1/chat/completions"): CHAT,
    ("POST", "/v1/messages"): CHAT,
    ("POST", "/v1/compare"): CHAT,
    ("POST", "/v1/embeddings"): CHAT,
    ("WS", "/v1/ws/chat"): CHAT,
    ("GET", "/v1/models"): CHAT,
    ("GET", "/v1/models/{}"): CHAT,
    # Conversations
    ("POST", "/v1/conversations"): CHAT,
    ("GET", "/v1/conversations"): CHAT,
    ("GET", "/v1/conversations/{}"): CHAT,
    ("PATCH", "/v1/conversations/{}"): CHAT,
    ("DELETE", "/v1/conversations/{}"): CHAT,
    ("POST", "/v1/conversations/{}/messages"): CHAT,
    ("GET", "/v1/conversations/{}/token-usage"): CHAT,
    ("POST", "/v1/conversations/{}/prune"): CHAT,
    # Jobs
    ("POST", "/v1/jobs"): JOBS,
    ("GET", "/v1/jobs"): JOBS,
    ("GET", "/v1/jobs/{}"): JOBS,
    ("POST", "/v1/jobs/{}/cancel"): JOBS,
    ("POST", "/v1/jobs/{}/retry"): JOBS,
    ("GET", "/v1/jobs/{}/events"): JOBS,
    ("WS", "/v1/jobs/{}/ws"): JOBS,
    # Knowledge
    ("POST", "/v1/knowledge"): KNOWLEDGE_WRITE,
    ("GET", "/v1/knowledge"): KNOWLEDGE_READ,
    ("POST", "/v1/knowledge/search"): KNOWLEDGE_READ,
    ("POST", "/v1/knowledge/ask"): KNOWLEDGE_READ,
    ("GET", "/v1/knowledge/{}"): KNOWLEDGE_READ,
    ("PATCH", "/v1/knowledge/{}"): KNOWLEDGE_WRITE,
    ("DELETE", "/v1/knowledge/{}"): KNOWLEDGE_WRITE,
    ("POST", "/v1/knowledge/{}/documents"): KNOWLEDGE_WRITE,
    ("GET", "/v1/knowledge/{}/documents"): KNOWLEDGE_READ,
    ("POST", "/v1/knowledge/{}/documents/confirm"): KNOWLEDGE_WRITE,
    ("POST", "/v1/uploads"): KNOWLEDGE_WRITE,
    ("GET", "/v1/documents/{}"): KNOWLEDGE_READ,
    ("DELETE", "/v1/documents/{}"): KNOWLEDGE_WRITE,
    ("POST", "/v1/documents/{}/reingest"): KNOWLEDGE_WRITE,
    # Marketplace
    ("POST", "/v1/marketplace/listings"): KNOWLEDGE_WRITE,
    ("GET", "/v1/marketplace/listings"): KNOWLEDGE_READ,
    ("GET", "/v1/marketplace/listings/{}"): KNOWLEDGE_READ,
    ("DELETE", "/v1/marketplace/listings/{}"): KNOWLEDGE_WRITE,
    ("POST", "/v1/marketplace/listings/{}/acquire"): KNOWLEDGE_WRITE,
    ("POST", "/v1/marketplace/listings/{}/ratings"): KNOWLEDGE_WRITE,
    ("GET", "/v1/marketplace/listings/{}/ratings"): KNOWLEDGE_READ,
    ("GET", "/v1/marketplace/entitlements"): KNOWLEDGE_READ,
    # Chains
    ("POST", "/v1/chains"): CHAT,
    ("GET", "/v1/chains"): CHAT,
    ("GET", "/v1/chains/{}"): CHAT,
    ("PUT", "/v1/chains/{}"): CHAT,
    ("DELETE", "/v1/chains/{}"): CHAT,
    ("POST", "/v1/chains/{}/run"): CHAT,
    ("GET", "/v1/chains/{}/runs"): CHAT,
    ("GET", "/v1/chains/runs/{}"): CHAT,
    ("POST", "/v1/chains/runs/{}/resume"): CHAT,
    ("POST", "/v1/chains/runs/{}/rerun"): CHAT,
    ("POST", "/v1/chains/runs/{}/cancel"): CHAT,
    ("GET", "/v1/chains/runs/{}/events"): CHAT,
    # Agents
    ("POST", "/v1/agents"): CHAT,
    ("GET", "/v1/agents"): CHAT,
    ("GET", "/v1/agents/{}"): CHAT,
    ("PUT", "/v1/agents/{}"): CHAT,
    ("DELETE", "/v1/agents/{}"): CHAT,
    ("POST", "/v1/agents/sessions"): CHAT,
    ("GET", "/v1/agents/sessions"): CHAT,
    ("GET", "/v1/agents/sessions/{}"): CHAT,
    ("DELETE", "/v1/agents/sessions/{}"): CHAT,
    ("POST", "/v1/agents/sessions/{}/messages"): CHAT,
    ("POST", "/v1/agents/sessions/{}/tool_results"): CHAT,
    ("POST", "/v1/agents/sessions/{}/approvals"): CHAT,
    ("GET", "/v1/agents/sessions/{}/events"): CHAT,
    # Webhook subscriptions (job, generation and tool events)
    ("POST", "/v1/webhooks"): JOBS,
    ("GET", "/v1/webhooks"): JOBS,
    ("GET", "/v1/webhooks/{}"): JOBS,
    ("DELETE", "/v1/webhooks/{}"): JOBS,
    ("GET", "/v1/webhooks/{}/deliveries"): JOBS,
    # Deployments (API.md)
    ("POST", "/v1/deployments"): DEPLOYMENTS,
    ("GET", "/v1/deployments"): DEPLOYMENTS,
    ("GET", "/v1/deployments/events"): DEPLOYMENTS,
    ("GET", "/v1/deployments/{}"): DEPLOYMENTS,
    ("DELETE", "/v1/deployments/{}"): DEPLOYMENTS,
    ("POST", "/v1/deployments/{}/start"): DEPLOYMENTS,
    ("POST", "/v1/deployments/{}/stop"): DEPLOYMENTS,
    ("POST", "/v1/deployments/{}/restart"): DEPLOYMENTS,
    ("GET", "/v1/deployments/{}/logs"): DEPLOYMENTS,
    ("GET", "/v1/resources"): DEPLOYMENTS,
    ("POST", "/v1/resources/{}/start"): DEPLOYMENTS,
    ("POST", "/v1/resources/{}/stop"): DEPLOYMENTS,
    ("GET", "/v1/pricing"): CHAT,
    ("POST", "/v1/models/{}/load"): ADMIN,
    ("POST", "/v1/models/{}/unload"): ADMIN,
    # Administration
    ("POST", "/v1/admin/users"): ADMIN,
    ("GET", "/v1/admin/users"): ADMIN,
    ("GET", "/v1/admin/users/{}"): ADMIN,
    ("PATCH", "/v1/admin/users/{}"): ADMIN,
    ("POST", "/v1/admin/users/{}/deactivate"): ADMIN,
    ("POST", "/v1/admin/models"): ADMIN,
    ("GET", "/v1/admin/models"): ADMIN,
    ("GET", "/v1/admin/models/{}"): ADMIN,
    ("PUT", "/v1/admin/models/{}"): ADMIN,
    ("DELETE", "/v1/admin/models/{}"): ADMIN,
    ("GET", "/v1/admin/jobs"): ADMIN,
    ("GET", "/v1/admin/jobs/stats"): ADMIN,
    ("POST", "/v1/admin/jobs/{}/cancel"): ADMIN,
    ("POST", "/v1/admin/jobs/{}/retry"): ADMIN,
    ("GET", "/v1/admin/jobs/failures"): ADMIN,
    ("POST", "/v1/admin/jobs/bulk"): ADMIN,
    ("GET", "/v1/admin/jobs/{}"): ADMIN,
    ("GET", "/v1/admin/jobs/{}/events"): ADMIN,
    ("GET", "/v1/admin/queues"): ADMIN,
    ("GET", "/v1/admin/audit"): ADMIN,
    ("GET", "/v1/admin/live"): ADMIN,
    ("POST", "/v1/admin/live/tickets"): ADMIN,
    ("GET", "/v1/admin/queues/history"): ADMIN,
    ("GET", "/v1/admin/model-traffic"): ADMIN,
    ("POST", "/v1/admin/queues/{}/pause"): ADMIN,
    ("POST", "/v1/admin/queues/{}/resume"): ADMIN,
    ("POST", "/v1/admin/queues/{}/dead-letters/purge"): ADMIN,
    ("GET", "/v1/admin/usage"): ADMIN,
    ("GET", "/v1/system/status"): ADMIN,
    ("GET", "/v1/system/metrics"): ADMIN,
}

_PARAM = re.compile(r"\{[^}]*\}")


def template(path: str) -> str:
    """`/v1/jobs/{job_id}` -> `/v1/jobs/{}`: parameters compare by position only."""
    return _PARAM.sub("{}", path)


def route_keys(route: BaseRoute) -> list[tuple[str, str]]:
    """The (method, template) pairs a route answers, HEAD folded into GET."""
    if isinstance(route, WebSocketRoute):
        return [("WS", template(route.path))]
    if isinstance(route, Route):
        methods = sorted((route.methods or {"GET"}) - {"HEAD"}) or ["GET"]
        return [(method, template(route.path)) for method in methods]
    return []


def granted(scopes: Iterable[str]) -> frozenset[str]:
    """A key's scopes with the ones they imply."""
    out = set(scopes)
    for scope in list(out):
        out.update(_IMPLIED.get(scope, ()))
    return frozenset(out)


def allows(who: Principal, needed: str | None) -> bool:
    """Whether `who`'s key scopes admit a route needing `needed` (None: undeclared)."""
    if not who.scopes or needed == ANY:
        return True
    return needed is not None and needed in granted(who.scopes)


def missing_scopes(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """`/v1` routes with no entry in ROUTE_SCOPES (each is closed to scoped keys)."""
    return [key for route in routes for key in route_keys(route)
            if key[1].startswith("/v1") and key not in ROUTE_SCOPES]


def guard_routes(routes: Sequence[BaseRoute]) -> None:
    """Put the scope check in front of every `/v1` route's app (once, at start-up)."""
    for route in routes:
        keys = route_keys(route)
        if not keys or not keys[0][1].startswith("/v1"):
            continue
        assert isinstance(route, Route | WebSocketRoute)
        # One route object answers one method in this codebase; methods that disagree
        # (or any undeclared one) close the route to scoped keys.
        needed = {ROUTE_SCOPES.get(key) for key in keys}
        route.app = _ScopeGuard(route.app, needed.pop() if len(needed) == 1 else None)


class _ScopeGuard:
    def __init__(self, app: ASGIApp, needed: str | None) -> None:
        self.app = app
        self.needed = needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        who: Principal | None = scope.get("state", {}).get("principal")
        if who is None or allows(who, self.needed):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting makes the server refuse the handshake (403).
            await send({"type": "websocket.close", "code": 4403, "reason": "PERMISSION_DENIED"})
            return
        message = (f"This API key lacks the '{self.needed}' scope this route needs."
                   if self.needed is not None else
                   "This route takes only API keys without scopes (it declares none).")
        response = error_response(scope.get("path", ""), 403, "PERMISSION_DENIED", message,
                                  request_id=scope.get("state", {}).get("request_id"),
                                  details={"required_scope": self.needed,
                                           "key_scopes": list(who.scopes)})
        await response(scope, receive, send)
