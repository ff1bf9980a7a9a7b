"""The SQL behind the dashboard's charts and models panel: per-minute throughput and latency
per queue over the last hour, and per-model traffic, errors and cost.

Every statement is bounded by an indexed time range:
- the history reads jobs *finished* since `since`, but the jobs table has no index on
  `finished_at`; it is bounded by `created_at >= since - HISTORY_LOOKBACK` too, so Postgres
  range-scans `ix_jobs_created` (the last day's jobs) instead of the whole table. A job
  created more than a day before it finished (a retry of an old job, a job that waited in a
  paused queue for a day) is not counted. A partial index on `finished_at` would remove
  that bound (see the dashboard notes);
- model traffic reads jobs created in the last day (`ix_jobs_created`) and usage records of
  the last day (`ix_usage_created`).

A job's queue is not a column: it follows from its kind (schemas/jobs.py JOB_ROUTES), so the
statement maps kind to queue with one CASE and percentiles are computed per queue, not
merged from per-kind ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, literal_column, select

from pipelines.db.tables import deployments, jobs, usage_records
from schemas.jobs import JOB_ROUTES

HISTORY_LOOKBACK = timedelta(days=1)
DEFAULT_QUEUE = "default"

QUEUE_OF_KIND: ColumnElement[str] = case(
    {kind: route.queue_name for kind, route in JOB_ROUTES.items()},
    value=jobs.c.kind, else_=literal(DEFAULT_QUEUE))
MODEL_OF_JOB = jobs.c.input["model"].astext


def _seconds(later: ColumnElement[datetime],
             earlier: ColumnElement[datetime]) -> ColumnElement[float]:
    """Seconds from `earlier` to `later`, never negative; NULL when either is NULL (GREATEST
    alone would turn NULL into 0, and a job that never started would count as instant)."""
    return case((and_(later.is_not(None), earlier.is_not(None)),
                 func.greatest(func.extract("epoch", later - earlier), 0)), else_=None)


def queue_history(since: datetime) -> Select:
    """One row per queue and minute with at least one job finished since `since`: jobs
    finished (and how), p50/p95 run time (`finished_at - started_at`) and p50/p95 queue
    wait (`started_at - enqueued_at`) of those jobs."""
    minute = func.date_trunc("minute", jobs.c.finished_at)
    run_s = _seconds(jobs.c.finished_at, jobs.c.started_at)
    wait_s = _seconds(jobs.c.started_at, jobs.c.enqueued_at)
    return (
        select(QUEUE_OF_KIND.label("queue"), minute.label("minute"),
               func.count().label("finished"),
               func.count().filter(jobs.c.status == "succeeded").label("succeeded"),
               func.count().filter(jobs.c.status == "failed").label("failed"),
               func.count().filter(jobs.c.status == "cancelled").label("cancelled"),
               func.percentile_cont(0.5).within_group(run_s).label("run_p50_s"),
               func.percentile_cont(0.95).within_group(run_s).label("run_p95_s"),
               func.percentile_cont(0.5).within_group(wait_s).label("wait_p50_s"),
               func.percentile_cont(0.95).within_group(wait_s).label("wait_p95_s"))
        .where(jobs.c.created_at >= since - HISTORY_LOOKBACK,
               jobs.c.finished_at >= since,
               jobs.c.status.in_(("succeeded", "failed", "cancelled")))
        # By position: the CASE carries bound parameters, which Postgres does not see as
        # the same expression in SELECT and GROUP BY (as in pipelines/db/job_search.py).
        .group_by(literal_column("1"), literal_column("2"))
    )


def model_requests(since: datetime, recent_since: datetime) -> Select:
    """Per model a job's input names: jobs since `since` and since `recent_since`, and how
    many of them failed."""
    recent = jobs.c.created_at >= recent_since
    failed = jobs.c.status == "failed"
    return (
        select(MODEL_OF_JOB.label("model"),
               func.count().label("requests"),
               func.count().filter(recent).label("requests_recent"),
               func.count().filter(failed).label("errors"),
               func.count().filter(and_(failed, recent)).label("errors_recent"))
        .where(jobs.c.created_at >= since, MODEL_OF_JOB.is_not(None))
        .group_by(literal_column("1"))
    )


def model_usage(since: datetime) -> Select:
    """Per model that answered: tokens, cost and mean duration of completions since `since`."""
    return (
        select(usage_records.c.model,
               func.count().label("completions"),
               func.coalesce(func.sum(usage_records.c.prompt_tokens), 0).label("prompt_tokens"),
               func.coalesce(func.sum(usage_records.c.completion_tokens), 0)
               .label("completion_tokens"),
               func.coalesce(func.sum(usage_records.c.cost_usd), 0).label("cost_usd"),
               func.avg(usage_records.c.duration_ms).label("avg_ms"),
               func.avg(usage_records.c.ttft_ms).label("avg_ttft_ms"))
        .where(usage_records.c.created_at >= since)
        .group_by(usage_records.c.model)
    )


def deployment_states() -> Select:
    return select(deployments.c.id, deployments.c.name, deployments.c.model,
                  deployments.c.state, deployments.c.state_message,
                  deployments.c.estimated_hourly_cost, deployments.c.cost_accrued_usd)
