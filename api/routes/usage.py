"""`GET /v1/usage`: the caller's tokens and cost, by model and by day.

The same report, across every owner and with `by_owner` / `by_key`, is part of
`GET /v1/admin/usage` (api/routes/admin_system.py) through `token_usage_report`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import datetime_query
from api.context import principal, services
from api.openapi import doc
from pipelines.db import models as models_db
from schemas.usage import TokenUsageReport, UsageGroup, UsageTotals

_QUERY = {"from": "string", "to": "string"}


def _totals(row: Any) -> dict[str, Any]:
    prompt, completion = int(row.prompt_tokens), int(row.completion_tokens)
    return {"requests": int(row.requests), "prompt_tokens": prompt,
            "completion_tokens": completion, "total_tokens": prompt + completion,
            "cost_usd": round(float(row.cost_usd), 10)}


async def token_usage_report(request: Request, *, owner_id: str | None,
                             admin: bool = False) -> TokenUsageReport:
    """Usage within the request's `from`/`to` for `owner_id` (None: everyone's, admins only)."""
    since = datetime_query(request, "from")
    until = datetime_query(request, "to", whole_day=True)
    key_id = request.query_params.get("key_id") if admin else None
    if admin and request.query_params.get("owner_id"):
        owner_id = request.query_params["owner_id"]
    groups = ["model", "day", *(("owner", "key") if admin else ())]
    found: dict[str, list[UsageGroup]] = {}
    async with services(request).autocommit.connect() as conn:
        total = (await conn.execute(models_db.usage_totals(
            None, owner_id=owner_id, key_id=key_id, since=since, until=until))).one()
        for group in groups:
            rows = (await conn.execute(models_db.usage_totals(
                group, owner_id=owner_id, key_id=key_id, since=since, until=until))).all()
            found[group] = [UsageGroup(key=None if r.group is None else str(r.group),
                                       **_totals(r)) for r in rows]
    return TokenUsageReport(from_=since, to=until, total=UsageTotals(**_totals(total)),
                            by_model=found["model"], by_day=found["day"],
                            by_owner=found.get("owner"), by_key=found.get("key"))


@doc("The caller's tokens and cost by model and by day", response=TokenUsageReport,
     query=_QUERY, tags=["usage"])
async def my_usage(request: Request) -> Response:
    report = await token_usage_report(request, owner_id=principal(request).owner_id)
    return Response(report.model_dump_json(by_alias=True), media_type="application/json")


routes = [Route("/v1/usage", my_usage, methods=["GET"])]
