"""The agent actor: one turn of an agent session, as an `agent` job (agents are in
api/routes/agents.py; their built-in tools in workers/agent_tools.py).

The session's items are the turn's state, each committed the moment it exists: the model's
answer (with the tool calls it asked for), then each tool's result. A redelivered turn
reloads the items and carries on from the last one: a tool whose result is committed is
never run again, and a model step whose answer was lost is asked again. A call to a
client-defined tool ends the job with `requires_action` (the job succeeds with that
status; nothing waits): `POST …/tool_results` records the answers and starts a new job
that resumes the turn.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pipelines import chat, metrics
from pipelines.agent_items import (
    AgentNotFound,
    AgentSessionNotFound,
    Call,
    TurnTimedOut,
    model_messages,
    model_tools,
    pending_calls,
    steps_in,
    tool_named,
)
from pipelines.budgets import budget_id, record_tokens
from pipelines.db import agents as agents_db
from pipelines.db import jobs as jobs_db
from pipelines.db.outcomes import chat_succeeded
from pipelines.errors import JobCancelled
from pipelines.models import ModelInfo
from pipelines.usage import local_usage
from schemas.agents import AgentTurnJob
from workers.actors import job_actor
from workers.agent_tools import run_builtin
from workers.jobs import Job
from workers.resources import Resources
from workers.webhook_deliveries import fire


@job_actor("agent")
async def run_agent_turn(job: Job, spec: AgentTurnJob) -> dict[str, Any]:
    """Publishes message.delta…, tool_call, tool_result, then turn.completed or
    requires_action (the job succeeds with the turn's status), or fails (turn.failed is
    made from the failure by the stream). Safe to re-run: it continues from the items."""
    res = job.resources
    async with res.aautocommit.connect() as conn:
        session = (await conn.execute(agents_db.get_session(spec.session_id,
                                                            job.owner_id))).first()
        agent = None if session is None else (await conn.execute(
            agents_db.get_agent(session.agent_id, job.owner_id))).first()
    if session is None:
        raise AgentSessionNotFound(f"No agent session with id '{spec.session_id}'.")
    if agent is None:
        raise AgentNotFound("The session's agent no longer exists.")
    turn = _Turn(res, job, spec.session_id, agent)
    limit_s = float(turn.limits.get("timeout_s") or 300)
    try:
        # Bounds a model step that hangs too, not only the gaps between steps.
        async with asyncio.timeout(limit_s):
            return await turn.run()
    except TimeoutError:
        raise TurnTimedOut(f"The turn ran longer than {limit_s:g} s.") from None


class _Turn:
    def __init__(self, res: Resources, job: Job, session_id: str, agent: Any) -> None:
        self.res, self.job, self.session_id, self.agent = res, job, session_id, agent
        self.limits: dict[str, Any] = dict(agent.limits or {})
        self.deadline = time.monotonic() + float(self.limits.get("timeout_s") or 300)
        self.prompt_tokens = self.completion_tokens = 0
        self.cost = Decimal(0)
        self.answered: ModelInfo | None = None

    async def emit(self, type_: str, data: dict[str, Any]) -> None:
        if await self.job.emit(type_, data):
            raise JobCancelled("The job was cancelled.")

    async def run(self) -> dict[str, Any]:
        max_steps = int(self.limits.get("max_steps") or 8)
        while True:
            self._check_time()
            items = await self._items()
            pending = pending_calls(items)
            if pending:
                unapproved, waiting = await self._run_tools(pending, _approvals(items))
                if unapproved:
                    return await self._end("requires_approval", stop_reason="requires_approval",
                                           extra={"required_action": {"type": "approvals",
                                                  "tool_calls": unapproved}})
                if waiting:
                    return await self._end("requires_action", stop_reason="requires_action",
                                           extra={"required_action": {"type": "tool_calls",
                                                  "tool_calls": waiting}})
                continue
            if steps_in(items, self.job.job_id) >= max_steps:
                return await self._end("idle", stop_reason="max_steps")
            answer = await self._step(items)
            if not answer["tool_calls"]:
                return await self._end("idle", stop_reason=answer["finish_reason"] or "stop",
                                       extra={"output": answer["content"]})

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TurnTimedOut(f"The turn ran longer than {self.limits.get('timeout_s')} s.")

    async def _items(self) -> list[Any]:
        async with self.res.aautocommit.connect() as conn:
            return list((await conn.execute(agents_db.items_of(self.session_id))).all())

    async def _step(self, items: list[Any]) -> dict[str, Any]:
        """One model call; its answer and tool calls are committed together."""
        res, agent = self.res, self.agent
        request: dict[str, Any] = {
            "model": agent.model, "stream": True,
            "messages": model_messages(agent.instructions, items)}
        tools = model_tools(agent.tools)
        if tools:
            request["tools"] = tools
        if self.limits.get("max_tokens"):
            request["max_tokens"] = int(self.limits["max_tokens"])
        chain = await res.models.chain(agent.model)
        by_id = {info.id: info for info in chain}

        async def emit(type_: str, data: dict[str, Any]) -> bool:
            if type_ != "delta":
                return False
            cancelled = False
            if data.get("reasoning"):
                cancelled = await self.job.emit("reasoning.delta", {"delta": data["reasoning"]})
            if data.get("text"):
                cancelled = await self.job.emit("message.delta", {"delta": data["text"]})
            return cancelled

        result = await chat.complete_with_fallbacks(
            [(info.id, res.chat_models.get(info)) for info in chain], request, emit,
            flush_ms=chat.flush_window_ms(res.settings.stream_flush_ms,
                                          res.settings.stream_flush_max_ms, res.active_jobs),
            count_tokens=local_usage, providers={info.id: info.provider for info in chain})
        answered = by_id[result["model"]]
        usage = result["usage"]
        prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cost += answered.cost_usd(prompt, completion)
        self.answered = answered
        if res.settings.daily_token_budget > 0:
            await record_tokens(res.aredis, res.keys, budget_id(self.job.key_id,
                                                                self.job.owner_id),
                                usage["total_tokens"])
        calls = [call for call in result["tool_calls"] if call.get("id")]
        async with res.aengine.begin() as conn:
            if result.get("reasoning"):
                # Kept with the step, before its answer; the model is not sent it again.
                await conn.execute(agents_db.insert_item(
                    session_id=self.session_id, job_id=self.job.job_id, type_="reasoning",
                    role="assistant", content=result["reasoning"],
                    data={"model": answered.id}))
            await conn.execute(agents_db.insert_item(
                session_id=self.session_id, job_id=self.job.job_id, type_="message",
                role="assistant", content=result["content"] or "",
                data={"model": answered.id, "finish_reason": result["finish_reason"],
                      "usage": usage}))
            for call in calls:
                await conn.execute(agents_db.insert_item(
                    session_id=self.session_id, job_id=self.job.job_id, type_="tool_call",
                    call_id=call["id"], data={"name": call["function"]["name"],
                                              "arguments": call["function"]["arguments"]}))
        for call in calls:
            await self.emit("tool_call", {"id": call["id"], "name": call["function"]["name"],
                                          "arguments": call["function"]["arguments"]})
        result["tool_calls"] = calls
        return result

    async def _run_tools(self, pending: list[Call], approvals: dict[str, bool],
                         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Run the server-side calls, committing each result; returns the calls that wait
        for an approval and the client's calls, which wait for their results."""
        unapproved: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        for call in pending:
            self._check_time()
            tool = tool_named(self.agent.tools, call.name)
            shown = {"id": call.id, "name": call.name, "arguments": call.arguments}
            denied = False
            if tool is not None and tool.get("approval_required"):
                if call.id not in approvals:
                    unapproved.append(shown)
                    continue
                denied = not approvals[call.id]
            if tool is not None and tool["type"] == "function" and not denied:
                waiting.append(shown)
                continue
            error: str | None
            if tool is None:
                output, error, elapsed_ms, sources = "", f"unknown tool '{call.name}'", 0.0, None
            elif denied:
                output, error, elapsed_ms, sources = "", "the user denied this tool call", 0.0, \
                    None
            else:
                await self._tool_event("tool_call.started", call)
                outcome = await run_builtin(self.res, self.job.owner_id, self.agent, tool, call)
                output, error = outcome.output, outcome.error
                elapsed_ms, sources = outcome.execution_time_ms, outcome.sources
            data: dict[str, Any] = {"name": call.name, "output": output, "error": error,
                                    "execution_time_ms": elapsed_ms}
            if sources is not None:
                data["sources"] = sources
            async with self.res.aautocommit.connect() as conn:
                await conn.execute(agents_db.insert_item(
                    session_id=self.session_id, job_id=self.job.job_id, type_="tool_result",
                    role="tool", content=output, call_id=call.id, data=data))
            event: dict[str, Any] = {"tool_call_id": call.id, "output": output, "error": error,
                     "execution_time_ms": elapsed_ms}
            if sources is not None:
                event["sources"] = sources
            await self.emit("tool_result", event)
            await self._tool_event("tool_call.failed" if error else "tool_call.completed",
                                   call, {"execution_time_ms": elapsed_ms, "result": output,
                                          "error": error})
        return unapproved, waiting

    async def _tool_event(self, name: str, call: Call,
                          extra: dict[str, Any] | None = None) -> None:
        """A server-side tool call's webhook event (Stack 2.9's fields, plus where it ran)."""
        await fire(self.res, self.job.owner_id, [(name, {
            "tool_call_id": call.id, "tool_name": call.name, "arguments": call.arguments,
            "session_id": self.session_id, "job_id": self.job.job_id, **(extra or {})})])

    async def _end(self, session_status: str, *, stop_reason: str,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
        usage = {"prompt_tokens": self.prompt_tokens,
                 "completion_tokens": self.completion_tokens,
                 "total_tokens": self.prompt_tokens + self.completion_tokens}
        status = session_status if session_status.startswith("requires_") else "completed"
        result: dict[str, Any] = {"object": "agent.turn", "session_id": self.session_id,
                                  "status": status, "stop_reason": stop_reason,
                                  "usage": usage, "cost_usd": float(self.cost), **(extra or {})}
        if status == "requires_action":
            await self.emit("requires_action",
                            {"tool_calls": result["required_action"]["tool_calls"]})
        elif status == "requires_approval":
            await self.emit("approval_required",
                            {"tool_calls": result["required_action"]["tool_calls"]})
        else:
            await self.emit("turn.completed", {"usage": usage, "stop_reason": stop_reason,
                                               "output": result.get("output")})
        self.job.finish = self._finisher(session_status)
        return result

    def _finisher(self, session_status: str) -> Any:
        job, answered, cost = self.job, self.answered, self.cost

        async def finish(conn: AsyncConnection, done: dict[str, Any]) -> Any:
            await conn.execute(agents_db.finish_session_turn(self.session_id, job.job_id,
                                                             session_status))
            if answered is None:  # No model call in this attempt: nothing to bill.
                return (await conn.execute(*jobs_db.mark_succeeded(job.job_id, job.attempt,
                                                                   done))).first()
            row = (await conn.execute(*chat_succeeded(
                job_id=job.job_id, attempt=job.attempt, result=done, owner_id=job.owner_id,
                key_id=job.key_id, model=answered.id, provider=answered.provider,
                cost_usd=cost))).first()
            if row is not None:
                metrics.record_chat(answered.id, answered.provider, done, float(cost))
            return row

        return finish


def _approvals(items: list[Any]) -> dict[str, bool]:
    """The client's decision on each call that needed one (call id -> approved)."""
    return {item.call_id: bool(item.data.get("approved"))
            for item in items if item.type == "approval"}
