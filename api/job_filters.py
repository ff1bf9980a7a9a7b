"""Operators' job filters, from a query string or a JSON body, as one `JobFilter`.

The listing, the failure groups and bulk actions all read them here, so a filter means
the same jobs everywhere (the dashboard lists what a bulk action will touch).
"""

from __future__ import annotations

from starlette.requests import Request

from pipelines.db.job_search import JobFilter
from schemas.admin_jobs import JobFilterBody
from schemas.jobs import JOB_ROUTES

FILTER_QUERY = {name: "string" for name in JobFilterBody.model_fields}
# Matches no job: a filter whose parts contradict each other (a kind not in the queue).
_NOTHING = ("-",)


def filter_from_query(request: Request) -> JobFilter:
    """The query's filters (`JobFilterBody` fields); an unreadable one is a 422."""
    params = {name: value for name in JobFilterBody.model_fields
              if (value := request.query_params.get(name))}
    return to_filter(JobFilterBody.model_validate(params))


def to_filter(body: JobFilterBody, *, statuses: tuple[str, ...] = ()) -> JobFilter:
    """`statuses`, when given, narrows the body's status to those an action applies to."""
    wanted: tuple[str, ...] = (body.status.value,) if body.status else ()
    if statuses:
        wanted = tuple(s for s in (wanted or statuses) if s in statuses) or _NOTHING
    kinds: tuple[str, ...] = (body.kind,) if body.kind else ()
    if body.queue:
        in_queue = tuple(k for k, route in JOB_ROUTES.items() if route.queue_name == body.queue)
        kinds = tuple(k for k in (kinds or in_queue) if k in in_queue) or _NOTHING
    return JobFilter(statuses=wanted, kinds=kinds, owner_id=body.owner_id, model=body.model,
                     created_from=body.created_from, created_to=body.created_to,
                     error_text=body.error, error_code=body.code, signature=body.signature)
