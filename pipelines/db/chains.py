"""Chains, their versions, runs and run steps: the tables (migration 0008_chains) and every
SQL statement on them.

The tables live here rather than in tables.py because only chains touch them; they share
tables.py's `metadata`. A run's status is its `chain` job's (joined, never copied), and
every step change is a conditional UPDATE on the step's job and attempt, so a redelivered
step never records twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Insert,
    Integer,
    Numeric,
    Select,
    Table,
    Text,
    UniqueConstraint,
    Update,
    and_,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from pipelines.db.tables import jobs, metadata

chains = Table(
    "chains",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("status", Text, nullable=False, server_default="draft"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("definition", JSONB, nullable=False),
    Column("prompt_count", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True)),
    Index("ix_chains_owner_created", "owner_id", text("created_at DESC"), text("id DESC")),
)

chain_versions = Table(
    "chain_versions",
    metadata,
    Column("chain_id", UUID(as_uuid=False), ForeignKey("chains.id", ondelete="CASCADE"),
           primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

chain_runs = Table(
    "chain_runs",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("chain_id", UUID(as_uuid=False), ForeignKey("chains.id", ondelete="CASCADE"),
           nullable=False),
    Column("version", Integer, nullable=False),
    Column("owner_id", Text, nullable=False),
    Column("inputs", JSONB, nullable=False),
    Column("rerun_of", UUID(as_uuid=False)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_chain_runs_chain_created", "chain_id", text("created_at DESC"), text("id DESC")),
)

chain_run_steps = Table(
    "chain_run_steps",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("run_id", UUID(as_uuid=False), ForeignKey("chain_runs.id", ondelete="CASCADE"),
           nullable=False),
    Column("prompt_id", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("job_id", UUID(as_uuid=False)),
    Column("job_attempt", Integer, nullable=False, server_default="0"),
    Column("input", Text),
    Column("output", Text),
    Column("model", Text),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("cost_usd", Numeric(20, 10)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", JSONB),
    Column("reused", Boolean, nullable=False, server_default="false"),
    Column("metadata", JSONB),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_ms", Float),
    UniqueConstraint("run_id", "prompt_id", name="uq_chain_run_steps_prompt"),
    Index("ix_chain_run_steps_job", "job_id"),
)

# A step whose output the next positions may use: its own, or (on_error: continue) the
# prompt's default output.
DONE = ("succeeded", "defaulted")
_ACTIVE_STEP = ("queued", "running")


def new_id() -> str:
    return str(uuid.uuid4())


# Chains --------------------------------------------------------------------------------

def insert_chain(*, chain_id: str, owner_id: str, name: str, description: str | None,
                 status: str, definition: dict[str, Any], prompt_count: int) -> Insert:
    return insert(chains).values(
        id=chain_id, owner_id=owner_id, name=name, description=description, status=status,
        version=1, definition=definition, prompt_count=prompt_count).returning(*chains.c)


def insert_version(chain_id: str, version: int, definition: dict[str, Any]) -> Insert:
    return insert(chain_versions).values(chain_id=chain_id, version=version,
                                         definition=definition)


def get_chain(chain_id: str, owner_id: str) -> Select:
    """The owner's chain, unless deleted: someone else's id finds nothing, like a missing one."""
    return select(chains).where(chains.c.id == chain_id, chains.c.owner_id == owner_id,
                                chains.c.deleted_at.is_(None))


def update_chain(chain_id: str, owner_id: str, *, name: str, description: str | None,
                 status: str, definition: dict[str, Any], prompt_count: int) -> Update:
    """A new version: the row's `version` goes up by one and is returned."""
    return (update(chains)
            .where(chains.c.id == chain_id, chains.c.owner_id == owner_id,
                   chains.c.deleted_at.is_(None))
            .values(name=name, description=description, status=status, definition=definition,
                    prompt_count=prompt_count, version=chains.c.version + 1,
                    updated_at=func.now())
            .returning(*chains.c))


def delete_chain(chain_id: str, owner_id: str) -> Update:
    """Soft delete: the chain disappears, its runs stay readable by id."""
    return (update(chains)
            .where(chains.c.id == chain_id, chains.c.owner_id == owner_id,
                   chains.c.deleted_at.is_(None))
            .values(deleted_at=func.now(), updated_at=func.now())
            .returning(chains.c.id))


def get_version(chain_id: str, version: int) -> Select:
    return select(chain_versions.c.definition).where(chain_versions.c.chain_id == chain_id,
                                                     chain_versions.c.version == version)


def list_chains(owner_id: str, *, limit: int, status: str | None,
                cursor: tuple[datetime, str] | None) -> Select:
    """Newest first, keyset-paged on (created_at, id) like the job listing."""
    stmt = select(chains.c.id, chains.c.name, chains.c.description, chains.c.status,
                  chains.c.version, chains.c.prompt_count, chains.c.created_at,
                  chains.c.updated_at).where(chains.c.owner_id == owner_id,
                                             chains.c.deleted_at.is_(None))
    if status:
        stmt = stmt.where(chains.c.status == status)
    if cursor:
        created_at, last_id = cursor
        stmt = stmt.where(or_(chains.c.created_at < created_at,
                              and_(chains.c.created_at == created_at, chains.c.id < last_id)))
    return stmt.order_by(chains.c.created_at.desc(), chains.c.id.desc()).limit(limit)


# Runs ----------------------------------------------------------------------------------

_RUN_COLUMNS = (chain_runs.c.id, chain_runs.c.chain_id, chain_runs.c.version,
                chain_runs.c.owner_id, chain_runs.c.inputs, chain_runs.c.rerun_of,
                chain_runs.c.created_at, jobs.c.status, jobs.c.error, jobs.c.result,
                jobs.c.attempts, jobs.c.started_at, jobs.c.finished_at, jobs.c.key_id)


def insert_run(*, run_id: str, chain_id: str, version: int, owner_id: str,
               inputs: dict[str, Any], rerun_of: str | None = None) -> Insert:
    return insert(chain_runs).values(id=run_id, chain_id=chain_id, version=version,
                                     owner_id=owner_id, inputs=inputs, rerun_of=rerun_of)


def insert_steps(rows: list[dict[str, Any]]) -> Insert:
    return insert(chain_run_steps).values(rows)


def get_run(run_id: str, owner_id: str) -> Select:
    """The run with its job's status; someone else's run finds nothing."""
    return (select(*_RUN_COLUMNS).select_from(chain_runs.join(jobs, jobs.c.id == chain_runs.c.id))
            .where(chain_runs.c.id == run_id, chain_runs.c.owner_id == owner_id))


def lock_run(run_id: str, *, with_definition: bool = False) -> Select:
    """The run with its job row locked: step completions, failures, the timeout and a
    cancel (an UPDATE of that row) take their turns, one at a time. With `with_definition`,
    also its version's definition (a run's start needs it: one round trip, not two)."""
    columns: list[Any] = list(_RUN_COLUMNS)
    if with_definition:
        columns.append(select(chain_versions.c.definition)
                       .where(chain_versions.c.chain_id == chain_runs.c.chain_id,
                              chain_versions.c.version == chain_runs.c.version)
                       .scalar_subquery().label("definition"))
    return (select(*columns).select_from(chain_runs.join(jobs, jobs.c.id == chain_runs.c.id))
            .where(chain_runs.c.id == run_id).with_for_update(of=jobs))


def list_runs(chain_id: str, owner_id: str, *, limit: int, status: str | None,
              cursor: tuple[datetime, str] | None) -> Select:
    stmt = (select(*(c for c in _RUN_COLUMNS if c.name not in ("inputs", "result")))
            .select_from(chain_runs.join(jobs, jobs.c.id == chain_runs.c.id))
            .where(chain_runs.c.chain_id == chain_id, chain_runs.c.owner_id == owner_id))
    if status:
        stmt = stmt.where(jobs.c.status == status)
    if cursor:
        created_at, last_id = cursor
        stmt = stmt.where(or_(chain_runs.c.created_at < created_at,
                              and_(chain_runs.c.created_at == created_at,
                                   chain_runs.c.id < last_id)))
    return stmt.order_by(chain_runs.c.created_at.desc(), chain_runs.c.id.desc()).limit(limit)


# Steps ---------------------------------------------------------------------------------

def steps_of(run_id: str) -> Select:
    return (select(chain_run_steps).where(chain_run_steps.c.run_id == run_id)
            .order_by(chain_run_steps.c.position, chain_run_steps.c.prompt_id))


def claim_step(step_id: str, run_id: str, job_id: str, job_attempt: int,
               owner_id: str) -> Select:
    """A step job's start, in one round trip: claim the step for this attempt of its job
    (only while it is this job's, unfinished, and its run runs and is `owner_id`'s) and read
    the step, its run's owner, status and attempt, and the version's definition.

    `claimed_attempts` is the step's try count after the claim, or None if not claimed; the
    other step columns are as they were before it (one statement, one snapshot).
    """
    claimed = (update(chain_run_steps)
               .where(chain_run_steps.c.id == step_id, chain_run_steps.c.run_id == run_id,
                      chain_run_steps.c.job_id == job_id,
                      chain_run_steps.c.status.in_(_ACTIVE_STEP),
                      exists(select(1).select_from(
                          jobs.join(chain_runs, chain_runs.c.id == jobs.c.id))
                          .where(jobs.c.id == run_id, jobs.c.status == "running",
                                 chain_runs.c.owner_id == owner_id)))
               .values(status="running", job_attempt=job_attempt,
                       attempts=chain_run_steps.c.attempts + 1, output=None, error=None,
                       started_at=func.now())
               .returning(chain_run_steps.c.attempts)
               .cte("claimed"))
    return (select(chain_run_steps, chain_runs.c.owner_id, chain_runs.c.chain_id,
                   chain_runs.c.version, jobs.c.status.label("run_status"),
                   jobs.c.attempts.label("run_attempts"), chain_versions.c.definition,
                   select(claimed.c.attempts).scalar_subquery().label("claimed_attempts"))
            .select_from(chain_run_steps
                         .join(chain_runs, chain_runs.c.id == chain_run_steps.c.run_id)
                         .join(jobs, jobs.c.id == chain_runs.c.id)
                         .join(chain_versions, and_(
                             chain_versions.c.chain_id == chain_runs.c.chain_id,
                             chain_versions.c.version == chain_runs.c.version)))
            .where(chain_run_steps.c.id == step_id, chain_run_steps.c.run_id == run_id))


def get_step(step_id: str, run_id: str) -> Select:
    return select(chain_run_steps).where(chain_run_steps.c.id == step_id,
                                         chain_run_steps.c.run_id == run_id)


def dispatch_step(step_id: str, rendered: str, *, job_id: str, owner_id: str,
                  key_id: str | None, job_input: dict[str, Any]) -> Update:
    """The step is queued as a new `chain_step` job `job_id` (a child of its run), its
    template rendered: the job's INSERT and the step's UPDATE in one statement (a
    data-modifying CTE always runs, referenced or not)."""
    new_job = (insert(jobs)
               .values(id=job_id, kind="chain_step", owner_id=owner_id, input=job_input,
                       parent_id=job_input["run_id"], key_id=key_id)
               .returning(jobs.c.id)
               .cte("new_job"))
    return (update(chain_run_steps)
            .where(chain_run_steps.c.id == step_id)
            .values(status="queued", job_id=job_id, job_attempt=0, input=rendered, output=None,
                    error=None, started_at=None, finished_at=None, duration_ms=None,
                    reused=False)
            .add_cte(new_job))


def count_attempt(step_id: str, job_id: str, job_attempt: int) -> Update:
    """One more try of the step within the same job attempt (the prompt's `retries`)."""
    return (update(chain_run_steps)
            .where(*_owned(step_id, job_id, job_attempt))
            .values(attempts=chain_run_steps.c.attempts + 1)
            .returning(chain_run_steps.c.attempts))


def _owned(step_id: str, job_id: str, job_attempt: int) -> tuple[Any, ...]:
    return (chain_run_steps.c.id == step_id, chain_run_steps.c.job_id == job_id,
            chain_run_steps.c.job_attempt == job_attempt, chain_run_steps.c.status == "running")


def finish_step(run_id: str, step_id: str, job_id: str, job_attempt: int, *, status: str,
                output: str | None, model: str | None, prompt_tokens: int | None,
                completion_tokens: int | None, cost_usd: Any, error: dict[str, Any] | None,
                metadata: dict[str, Any] | None, input: str | None = None) -> Select:
    """A step's end, in one round trip: lock the run's job row (as `lock_run`), and record
    the step's end if the run still runs and this attempt of its job still owns the step.

    The run's row, with `finished` True when the step's end was recorded. The other steps
    are read by a later statement: this one's snapshot predates the lock's wait, so a
    sibling that ended while it waited would look unfinished here.
    """
    run = (select(jobs.c.id, jobs.c.status, jobs.c.error, jobs.c.result, jobs.c.attempts,
                  jobs.c.started_at, jobs.c.finished_at, jobs.c.key_id)
           .where(jobs.c.id == run_id).with_for_update().cte("locked_run"))
    values: dict[str, Any] = dict(
        status=status, output=output, model=model, prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens, cost_usd=cost_usd, error=error, metadata=metadata,
        finished_at=func.now(),
        duration_ms=func.extract("epoch", func.now() - chain_run_steps.c.started_at) * 1000)
    if input is not None:
        values["input"] = input
    finished = (update(chain_run_steps)
                .where(*_owned(step_id, job_id, job_attempt),
                       exists(select(1).select_from(run).where(run.c.status == "running")))
                .values(**values)
                .returning(chain_run_steps.c.id)
                .cte("finished"))
    return (select(chain_runs.c.id, chain_runs.c.chain_id, chain_runs.c.version,
                   chain_runs.c.owner_id, chain_runs.c.inputs, chain_runs.c.rerun_of,
                   chain_runs.c.created_at, run.c.status, run.c.error, run.c.result,
                   run.c.attempts, run.c.started_at, run.c.finished_at, run.c.key_id,
                   exists(select(1).select_from(finished)).label("finished"))
            .select_from(run.join(chain_runs, chain_runs.c.id == run.c.id)))


def stop_active_steps(run_id: str, status: str = "cancelled") -> Update:
    """Steps still queued or running end with the run (a cancel, a failure, the timeout)."""
    return (update(chain_run_steps)
            .where(chain_run_steps.c.run_id == run_id,
                   chain_run_steps.c.status.in_(_ACTIVE_STEP))
            .values(status=status, finished_at=func.now())
            .returning(chain_run_steps.c.job_id))


def cancel_step(step_id: str, job_id: str) -> Update:
    """The step ends cancelled, if it is still this job's and unfinished."""
    return (update(chain_run_steps)
            .where(chain_run_steps.c.id == step_id, chain_run_steps.c.job_id == job_id,
                   chain_run_steps.c.status.in_(_ACTIVE_STEP))
            .values(status="cancelled", finished_at=func.now()))


def cancel_step_job(job_id: str) -> Update:
    """A step job whose run ended: cancelled, so no sweeper sends it again."""
    return (update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(("queued", "running")))
            .values(status="cancelled", updated_at=func.now(), finished_at=func.now(),
                    error={"code": "CANCELLED", "message": "The chain run ended."})
            .returning(jobs.c.id))


def reset_unfinished_steps(run_id: str) -> Update:
    """Before a resumed run dispatches: every step that has no usable output runs again."""
    return (update(chain_run_steps)
            .where(chain_run_steps.c.run_id == run_id,
                   chain_run_steps.c.status.notin_(DONE + _ACTIVE_STEP))
            .values(status="pending", job_id=None, job_attempt=0))


def copy_step(step: Any, run_id: str) -> dict[str, Any]:
    """A finished step of an earlier run, reused by a rerun as it was."""
    return {"id": new_id(), "run_id": run_id, "prompt_id": step.prompt_id, "name": step.name,
            "position": step.position, "status": step.status, "job_id": step.job_id,
            "input": step.input, "output": step.output, "model": step.model,
            "prompt_tokens": step.prompt_tokens, "completion_tokens": step.completion_tokens,
            "cost_usd": step.cost_usd, "attempts": step.attempts, "error": step.error,
            "reused": True, "metadata": step.metadata, "started_at": step.started_at,
            "finished_at": step.finished_at, "duration_ms": step.duration_ms}
