"""Following a job's events: one async generator shared by SSE and WebSocket adapters.

Subscribe first, then replay the backlog after the client's last id, then follow live
events, dropping any id already sent. The generator yields `None` as a keep-alive tick when
nothing happened for `keepalive_s`, and ends after the terminal event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from api.hub import RESYNC, Hub
from pipelines.events import AsyncEventLog, stream_id_key
from schemas.jobs import Event

_BACKLOG_PAGE = 1000


async def follow(
    hub: Hub,
    log: AsyncEventLog,
    job_id: str,
    *,
    last_event_id: str | None = None,
    keepalive_s: float = 15.0,
    max_lifetime_s: float = 3600.0,
    when_log_missing: Callable[[], Awaitable[Event | None]] | None = None,
) -> AsyncIterator[Event | None]:
    """Every event of `job_id` after `last_event_id`, in order, exactly once, until terminal.

    `when_log_missing` is asked for a stand-in terminal event when the job's stream has
    expired (or never existed): without it a client of a long-finished job would wait forever.
    """
    deadline = time.monotonic() + max_lifetime_s
    last = last_event_id
    async with hub.subscribe(log.keys.channel(job_id), job_id) as queue:
        # A terminal event ends a replay only if it is the newest: a job retried after
        # failing or being cancelled has its new attempt's events after it.
        ended = False
        replayed = False
        async for event in _replay(log, job_id, last):
            replayed = True
            last = event.id
            ended = event.terminal
            yield event
        if ended:
            return
        if not replayed:
            newest = await log.last_event(job_id)
            if newest is None and when_log_missing is not None:
                stand_in = await when_log_missing()
                if stand_in is not None:
                    yield stand_in
                    return
            if newest is not None and newest.terminal and last is not None and (
                stream_id_key(newest.id) <= stream_id_key(last)
            ):
                # A client resuming after the terminal event: nothing more will come.
                return
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                # Events usually arrive in bursts: take what is queued without arming a
                # timer, which costs more than the rest of this loop.
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    item = await asyncio.wait_for(queue.get(),
                                                  timeout=min(keepalive_s, remaining))
                except TimeoutError:
                    yield None
                    continue
            if item is RESYNC:
                async for event in _replay(log, job_id, last):
                    last = event.id
                    ended = event.terminal
                    yield event
                if ended:
                    return
                continue
            if last is not None and stream_id_key(item.id) <= stream_id_key(last):
                continue
            last = item.id
            yield item
            if item.terminal:
                return


async def _replay(log: AsyncEventLog, job_id: str, after: str | None) -> AsyncIterator[Event]:
    while True:
        batch = await log.backlog(job_id, after=after, count=_BACKLOG_PAGE)
        for event in batch:
            yield event
        if len(batch) < _BACKLOG_PAGE:
            return
        after = batch[-1].id


