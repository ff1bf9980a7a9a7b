"""api/scopes.py: every `/v1` route of the app declares its scope, and the rules of
narrowing (a scoped key never exceeds its scopes; an unscoped key has its owner's rights)."""

from __future__ import annotations

import pytest

from api.app import create_app
from api.context import Principal
from api.scopes import (
    ANY,
    ROUTE_SCOPES,
    SCOPES,
    allows,
    guard_routes,
    missing_scopes,
    route_keys,
    template,
)
from schemas.settings import Settings


def _app_routes() -> list:  # type: ignore[type-arg]
    app = create_app(Settings(switchyard_env="development", log_json=False))
    return list(app.routes)


def test_every_v1_route_of_the_app_declares_a_scope() -> None:
    missing = missing_scopes(_app_routes())
    assert not missing, (
        "These routes have no scope: add each to ROUTE_SCOPES in api/scopes.py (until then "
        "every scoped key gets 403 from them):\n"
        + "\n".join(f"    ({method!r}, {path!r}): <scope>," for method, path in missing))


def test_every_declared_scope_is_a_known_one() -> None:
    assert {scope for scope in ROUTE_SCOPES.values() if scope != ANY} <= set(SCOPES)


def test_path_parameters_compare_by_position_not_name() -> None:
    assert template("/v1/jobs/{job_id}/events") == "/v1/jobs/{}/events"
    assert template("/v1/models/{model_id:path}") == "/v1/models/{}"


def test_head_is_folded_into_get() -> None:
    from starlette.routing import Route

    route = Route("/v1/jobs", lambda r: None, methods=["GET"])  # type: ignore[arg-type,return-value]
    assert route_keys(route) == [("GET", "/v1/jobs")]


@pytest.mark.parametrize(("scopes", "needed", "allowed"), [
    ((), "admin", True),  # no scopes: the owner's rights (the role still decides)
    (("chat",), "chat", True),
    (("chat",), "jobs", False),
    (("knowledge:write",), "knowledge:read", True),  # write implies read
    (("knowledge:read",), "knowledge:write", False),
    (("chat",), ANY, True),
    (("chat",), None, False),  # an undeclared route is closed to scoped keys
    ((), None, True),
])
def test_a_keys_scopes_only_narrow(scopes: tuple[str, ...], needed: str | None,
                                   allowed: bool) -> None:
    who = Principal(id="u", role="user", key_id="k", scopes=scopes)
    assert allows(who, needed) is allowed


def test_an_undeclared_route_is_guarded_fail_closed() -> None:
    from starlette.routing import Route

    route = Route("/v1/brand-new-thing", lambda r: None, methods=["POST"])  # type: ignore[arg-type,return-value]
    guard_routes([route])
    assert getattr(route.app, "needed", "unset") is None
