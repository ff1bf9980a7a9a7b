"""Conversations end to end: CRUD and paging, turns streamed and whole with both persisted,
`conversation_id` on chat completions, token usage, the prune job, and 404/4xx edges —
against real uvicorn, dramatiq, Postgres and Redis with the dev models."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pipelines.conversations import message_tokens
from pipelines.db import conversations as conversations_db
from pipelines.db import jobs as jobs_db
from pipelines.db import tables
from pipelines.db.engine import async_engine
from pipelines.db.outcomes import chat_succeeded
from tests.integration.accounts import new_user
from tests.integration.jobclient import poll, wait_status


@pytest.fixture
def user_http(stack: Any, http: httpx.Client) -> Iterator[httpx.Client]:
    """A fresh user of its own, so counts and pages see only this test's conversations."""
    user = new_user(http, stack.headers)
    with httpx.Client(base_url=stack.base_url, headers=user.headers, timeout=10.0) as c:
        yield c


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/v1/conversations", json={"model": "dev/echo", **body})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def say(http: httpx.Client, conversation_id: str, content: str, **extra: Any) -> dict[str, Any]:
    response = http.post(f"/v1/conversations/{conversation_id}/messages",
                         json={"content": content, **extra}, timeout=30.0)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def stream(http: httpx.Client, conversation_id: str, content: str,
           **extra: Any) -> list[tuple[str, dict[str, Any]]]:
    events = []
    with connect_sse(http, "POST", f"/v1/conversations/{conversation_id}/messages",
                     json={"content": content, "stream": True, **extra},
                     timeout=httpx.Timeout(30.0)) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["x-job-id"]
        for sse in source.iter_sse():
            events.append((sse.event, sse.json()))
    return events


def messages_of(http: httpx.Client, conversation_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    return response.json()["messages"]  # type: ignore[no-any-return]


# --- CRUD --------------------------------------------------------------------------------


def test_a_conversation_is_created_read_renamed_and_deleted(http: httpx.Client) -> None:
    made = create(http, title="Trip", system_prompt="Be brief.")
    assert made["title"] == "Trip" and made["model"] == "dev/echo"
    assert made["system_prompt"] == "Be brief." and made["message_count"] == 0
    url = f"/v1/conversations/{made['id']}"

    read = http.get(url).json()
    assert read["messages"] == [] and read["id"] == made["id"]

    patched = http.patch(url, json={"title": "Holiday", "system_prompt": None})
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "Holiday" and patched.json()["system_prompt"] is None
    assert patched.json()["updated_at"] >= made["updated_at"]
    assert patched.json()["model"] == "dev/echo"

    assert http.delete(url).status_code == 204
    assert http.get(url).status_code == 404
    assert http.delete(url).status_code == 404


def test_listing_pages_and_sorts_by_created_or_updated(user_http: httpx.Client) -> None:
    ids = [create(user_http, title=f"c{i}")["id"] for i in range(5)]
    say(user_http, ids[1], "touch me")  # now the most recently updated

    newest_first = user_http.get("/v1/conversations",
                                 params={"sort": "created_at", "order": "desc"}).json()
    assert newest_first["total"] == 5 and newest_first["limit"] == 20
    assert [c["id"] for c in newest_first["conversations"]] == ids[::-1]

    pages = [user_http.get("/v1/conversations", params={
        "sort": "created_at", "order": "asc", "limit": 2, "offset": offset}).json()
        for offset in (0, 2, 4)]
    assert [[c["id"] for c in page["conversations"]] for page in pages] == [
        ids[0:2], ids[2:4], ids[4:5]]
    assert all(page["total"] == 5 and page["limit"] == 2 for page in pages)
    assert pages[1]["offset"] == 2

    by_update = user_http.get("/v1/conversations").json()["conversations"]
    assert by_update[0]["id"] == ids[1] and by_update[0]["message_count"] == 2


# --- turns -------------------------------------------------------------------------------


def test_a_streamed_turn_sends_text_deltas_then_finish_and_persists_both_turns(
    http: httpx.Client,
) -> None:
    conversation = create(http, system_prompt="Repeat after me.")
    events = stream(http, conversation["id"], "the quick brown fox")

    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "finish" and set(kinds[:-1]) == {"text-delta"}
    text = "".join(data["text"] for kind, data in events if kind == "text-delta")
    assert text == "the quick brown fox"
    finish = events[-1][1]
    assert finish["message"] == {"role": "assistant", "content": text}
    assert finish["finish_reason"] == "stop"
    assert finish["usage"]["completion_tokens"] == 4 and finish["usage"]["prompt_tokens"] > 0

    stored = messages_of(http, conversation["id"])
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "the quick brown fox"), ("assistant", "the quick brown fox")]
    assert stored[0]["job_id"] == stored[1]["job_id"] == finish["job_id"]
    assert all(m["tokens"] > 0 for m in stored)


def test_a_whole_turn_sends_the_history_and_the_reply_is_stored_once(
    http: httpx.Client,
) -> None:
    conversation = create(http, system_prompt="Be brief.")
    first = say(http, conversation["id"], "hello there")
    second = say(http, conversation["id"], "general kenobi")
    assert first["message"] == {"role": "assistant", "content": "hello there"}
    assert second["message"]["content"] == "general kenobi"

    job = wait_status(http, second["job_id"])
    assert job["input"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "hello there"},
        {"role": "user", "content": "general kenobi"},
    ]
    assert job["input"]["conversation_id"] == conversation["id"]
    stored = messages_of(http, conversation["id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert [m["id"] for m in stored] == sorted(m["id"] for m in stored)


def test_the_reply_is_stored_even_when_the_client_hangs_up_mid_stream(
    http: httpx.Client,
) -> None:
    conversation = create(http, model="dev/lorem")
    url = f"/v1/conversations/{conversation['id']}/messages"
    body = {"content": "go", "stream": True, "max_tokens": 20,
            "dev_options": {"token_delay_ms": 30}}
    with connect_sse(http, "POST", url, json=body) as source:
        for sse in source.iter_sse():
            if sse.event == "text-delta":
                break  # hang up after the first words

    stored = poll(lambda: (m := messages_of(http, conversation["id"])) and len(m) == 2 and m,
                  timeout_s=15, what="the assistant turn")
    assert stored[1]["role"] == "assistant"
    assert len(stored[1]["content"].split()) == 20


def test_conversation_id_on_chat_completions_prepends_history_and_stores_both_turns(
    http: httpx.Client,
) -> None:
    conversation = create(http, system_prompt="Echo.")
    say(http, conversation["id"], "one")
    response = http.post("/v1/chat/completions", json={
        "model": "dev/echo", "conversation_id": conversation["id"],
        "messages": [{"role": "user", "content": "two"}]})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "two"

    stored = messages_of(http, conversation["id"])
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "one"), ("assistant", "one"), ("user", "two"), ("assistant", "two")]
    job = wait_status(http, stored[3]["job_id"])
    assert [m["content"] for m in job["input"]["messages"]] == ["Echo.", "one", "one", "two"]


def test_conversation_id_on_a_streamed_chat_completion_stores_the_reply(
    http: httpx.Client,
) -> None:
    conversation = create(http)
    with connect_sse(http, "POST", "/v1/chat/completions", json={
            "model": "dev/echo", "conversation_id": conversation["id"], "stream": True,
            "messages": [{"role": "user", "content": "streamed words"}]}) as source:
        assert source.response.status_code == 200
        frames = [sse.data for sse in source.iter_sse()]
    assert frames[-1] == "[DONE]"
    stored = poll(lambda: (m := messages_of(http, conversation["id"])) and len(m) == 2 and m,
                  what="the assistant turn")
    assert stored[1]["content"] == "streamed words"


def _result(content: str) -> dict[str, Any]:
    return {"content": content, "usage": {"prompt_tokens": 4, "completion_tokens": 2,
                                          "total_tokens": 6},
            "duration_ms": 12.5, "ttft_ms": 3.5, "finish_reason": "stop"}


async def _running_job(conn: AsyncConnection, owner_id: str, *, claims: int = 1) -> str:
    """A chat job claimed `claims` times (so its attempt is `claims`), as a worker leaves it."""
    job_id = jobs_db.new_job_id()
    await conn.execute(*jobs_db.insert_job(job_id=job_id, kind="chat", owner_id=owner_id,
                                           input={"model": "dev/echo"}))
    for _ in range(claims):
        await conn.execute(*jobs_db.mark_running(job_id))
    return job_id


def test_a_reply_is_recorded_once_per_job_and_only_after_its_own_turn(
    database_url: str,
) -> None:
    """`chat_succeeded` against the real schema: one statement finishes the job, records its
    usage and the conversation's reply, only for the attempt that owns the job."""
    owner, stranger = f"owner-{uuid.uuid4().hex[:8]}", f"stranger-{uuid.uuid4().hex[:8]}"
    conversation_id = conversations_db.new_conversation_id()

    async def finish(conn: AsyncConnection, job_id: str, attempt: int, content: str,
                     owner_id: str = owner) -> Any:
        statement, values = chat_succeeded(
            job_id=job_id, attempt=attempt, result=_result(content), owner_id=owner_id,
            key_id=None, model="dev/echo", provider="dev", cost_usd=Decimal("0.25"),
            conversation_id=conversation_id, reply_tokens=5)
        return (await conn.execute(statement, values)).first()

    async def scenario() -> dict[str, Any]:
        engine = async_engine(database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.execute(conversations_db.insert_conversation(
                    conversation_id=conversation_id, owner_id=owner, model="dev/echo",
                    title=None, system_prompt=None))
                asked = await _running_job(conn, owner)
                elsewhere = await _running_job(conn, owner)  # made without this conversation
                foreign = await _running_job(conn, stranger)
                stale = await _running_job(conn, owner, claims=2)  # attempt 1 is stale
                for job_id in (asked, foreign, stale):
                    await conn.execute(conversations_db.insert_messages(
                        conversation_id, [{"role": "user", "content": "ask", "tokens": 3}],
                        job_id))
            out: dict[str, Any] = {"jobs": {"asked": asked, "elsewhere": elsewhere,
                                            "foreign": foreign, "stale": stale}}
            async with engine.begin() as conn:
                out["first"] = await finish(conn, asked, 1, "the reply")
            async with engine.begin() as conn:
                out["again"] = await finish(conn, asked, 1, "a second reply")
            async with engine.begin() as conn:
                # Even if the job were claimed again, its reply and usage stay single.
                await conn.execute(update(tables.jobs).where(tables.jobs.c.id == asked)
                                   .values(status="running", attempts=2))
                out["reclaimed"] = await finish(conn, asked, 2, "a third reply")
            async with engine.begin() as conn:
                out["elsewhere"] = await finish(conn, elsewhere, 1, "not for this chat")
                out["foreign"] = await finish(conn, foreign, 1, "not theirs", stranger)
                out["stale"] = await finish(conn, stale, 1, "too late")
            async with engine.connect() as conn:
                out["replies"] = (await conn.execute(
                    select(tables.conversation_messages.c.job_id,
                           tables.conversation_messages.c.content,
                           tables.conversation_messages.c.tokens)
                    .where(tables.conversation_messages.c.conversation_id == conversation_id,
                           tables.conversation_messages.c.role == "assistant"))).all()
                usage = tables.usage_records.c
                out["usage"] = (await conn.execute(
                    select(usage.job_id, usage.prompt_tokens, usage.completion_tokens,
                           usage.cost_usd)
                    .where(usage.owner_id.in_([owner, stranger])))).all()
                out["status"] = dict((await conn.execute(
                    select(tables.jobs.c.id, tables.jobs.c.status)
                    .where(tables.jobs.c.owner_id.in_([owner, stranger])))).all())
                out["stored"] = (await conn.execute(
                    select(tables.jobs.c.result).where(tables.jobs.c.id == asked))).scalar()
                out["conversation"] = (await conn.execute(
                    select(tables.conversations.c.created_at, tables.conversations.c.updated_at)
                    .where(tables.conversations.c.id == conversation_id))).one()
        finally:
            await engine.dispose()
        return out

    out = asyncio.run(scenario())
    jobs = out["jobs"]
    assert out["first"] is not None and str(out["first"].id) == jobs["asked"]
    assert out["again"] is None
    assert out["reclaimed"] is not None
    assert out["elsewhere"] is not None and out["foreign"] is not None
    assert out["stale"] is None
    # One reply, the first attempt's, and only for the job whose turn the conversation holds.
    assert [(str(r.job_id), r.content, r.tokens) for r in out["replies"]] == [
        (jobs["asked"], "the reply", 5)]
    assert sorted(str(r.job_id) for r in out["usage"]) == sorted(
        [jobs["asked"], jobs["elsewhere"], jobs["foreign"]])
    assert {(r.prompt_tokens, r.completion_tokens, r.cost_usd) for r in out["usage"]} == {
        (4, 2, Decimal("0.25"))}
    status = {job: out["status"][job_id] for job, job_id in jobs.items()}
    assert status == {"asked": "succeeded", "elsewhere": "succeeded", "foreign": "succeeded",
                      "stale": "running"}
    assert out["stored"]["content"] == "a third reply"
    # The reply moved the conversation up in "recently updated" listings.
    assert out["conversation"].updated_at > out["conversation"].created_at


# --- token usage and prune ---------------------------------------------------------------


def test_token_usage_counts_each_role_against_the_models_context_window(
    http: httpx.Client,
) -> None:
    conversation = create(http, system_prompt="You are terse.")
    say(http, conversation["id"], "alpha beta gamma")
    usage = http.get(f"/v1/conversations/{conversation['id']}/token-usage").json()

    each = message_tokens("user", "alpha beta gamma", "dev/echo")
    assert usage["by_role"] == {"system": message_tokens("system", "You are terse.", "dev/echo"),
                                "user": each, "assistant": message_tokens(
                                    "assistant", "alpha beta gamma", "dev/echo")}
    assert usage["total"] == sum(usage["by_role"].values())
    assert usage["context_limit"] == 1_000_000 and usage["model"] == "dev/echo"
    assert usage["utilization_percent"] == round(100 * usage["total"] / 1_000_000, 2)
    assert usage["last_pruning"] is None


def test_prune_summarises_the_oldest_turns_in_a_job_and_keeps_the_latest(
    http: httpx.Client,
) -> None:
    conversation = create(http, system_prompt="Sys.")
    for word in ("first message", "second message", "third message"):
        say(http, conversation["id"], word)
    before = http.get(f"/v1/conversations/{conversation['id']}/token-usage").json()

    response = http.post(f"/v1/conversations/{conversation['id']}/prune",
                         json={"keep_last": 2, "model": "dev/lorem", "max_summary_tokens": 16})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "prune" and response.headers["location"] == f"/v1/jobs/{job['id']}"
    done = wait_status(http, job["id"])
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert result["messages_pruned"] == 4 and result["messages_kept"] == 2
    assert result["tokens_before"] == before["total"]
    assert len(result["summary"].split()) == 16 and result["model"] == "dev/lorem"

    stored = messages_of(http, conversation["id"])
    assert [m["role"] for m in stored] == ["system", "user", "assistant"]
    assert stored[0]["content"].endswith(result["summary"])
    assert [m["content"] for m in stored[1:]] == ["third message", "third message"]
    after = http.get(f"/v1/conversations/{conversation['id']}/token-usage").json()
    assert after["total"] == result["tokens_after"]
    assert after["last_pruning"]["job_id"] == job["id"]
    assert after["last_pruning"]["messages_pruned"] == 4

    # The summary stands first in the history of the next turn.
    nxt = say(http, conversation["id"], "fourth")
    sent = wait_status(http, nxt["job_id"])["input"]["messages"]
    assert [m["role"] for m in sent] == ["system", "system", "user", "assistant", "user"]


def test_pruning_a_short_conversation_prunes_nothing_with_an_empty_body(
    http: httpx.Client,
) -> None:
    conversation = create(http)
    say(http, conversation["id"], "only")
    response = http.post(f"/v1/conversations/{conversation['id']}/prune")
    assert response.status_code == 202, response.text
    result = wait_status(http, response.json()["id"])["result"]
    assert result["messages_pruned"] == 0 and result["messages_kept"] == 2
    assert result["tokens_after"] == result["tokens_before"] and result["summary"] is None


# --- not found and bad input -------------------------------------------------------------


@pytest.mark.parametrize("conversation_id",  # fixed ids: every xdist worker collects alike
                         ["foreign", "6f1d0c52-93a4-4b7e-8c1a-0000000000a3", "not-a-uuid"])
def test_someone_elses_or_an_unknown_conversation_is_not_found_on_every_route(
    stack: Any, http: httpx.Client, user_http: httpx.Client, conversation_id: str,
) -> None:
    if conversation_id == "foreign":
        conversation_id = create(http, title="admin's")["id"]
    base = f"/v1/conversations/{conversation_id}"
    calls = [("GET", base, None), ("PATCH", base, {"title": "x"}), ("DELETE", base, None),
             ("POST", base + "/messages", {"content": "hi"}),
             ("GET", base + "/token-usage", None), ("POST", base + "/prune", {})]
    for method, url, body in calls:
        response = user_http.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    chat = user_http.post("/v1/chat/completions", json={
        "model": "dev/echo", "conversation_id": conversation_id,
        "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 404 and chat.json()["error"]["type"] == "invalid_request_error"
    listed = user_http.get("/v1/conversations").json()["conversations"]
    assert all(c["id"] != conversation_id for c in listed)


def test_bad_input_is_refused_with_the_matching_4xx(http: httpx.Client) -> None:
    conversation = create(http)
    url = f"/v1/conversations/{conversation['id']}"
    cases: list[tuple[str, str, Any, int]] = [
        ("POST", "/v1/conversations", {}, 422),
        ("POST", "/v1/conversations", {"model": "no/such-model"}, 404),
        ("POST", "/v1/conversations", {"model": "dev/echo", "colour": "red"}, 422),
        ("GET", "/v1/conversations?limit=0", None, 422),
        ("GET", "/v1/conversations?limit=abc", None, 422),
        ("GET", "/v1/conversations?offset=-1", None, 422),
        ("GET", "/v1/conversations?sort=title", None, 422),
        ("GET", "/v1/conversations?order=sideways", None, 422),
        ("PATCH", url, {"model": None}, 422),
        ("PATCH", url, {"model": "no/such-model"}, 404),
        ("POST", url + "/messages", {"content": ""}, 422),
        ("POST", url + "/messages", {}, 422),
        ("POST", url + "/prune", {"keep_last": -1}, 422),
        ("POST", url + "/prune", {"model": "no/such-model"}, 404),
    ]
    for method, path, body, status in cases:
        response = http.request(method, path, json=body)
        assert response.status_code == status, (method, path, body, response.text)
        assert response.json()["error"]["code"]
    not_json = http.post(url + "/messages", content=b"hi", headers={"content-type": "text/plain"})
    assert not_json.status_code == 415
    replay = http.post("/v1/chat/completions", json={
        "model": "dev/echo", "conversation_id": conversation["id"],
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    assert replay.status_code == 422, replay.text
    assert messages_of(http, conversation["id"]) == []


def test_the_openapi_document_describes_the_conversation_routes(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    prune = paths["/v1/conversations/{conversation_id}/prune"]["post"]
    assert "202" in prune["responses"] and "tokens_before" in prune["summary"]
    assert {"get", "patch", "delete"} <= set(paths["/v1/conversations/{conversation_id}"])
    assert "/v1/compare" in paths


def test_a_prune_job_made_through_the_jobs_api_still_checks_the_owner(
    http: httpx.Client, user_http: httpx.Client,
) -> None:
    mine = create(http)
    say(http, mine["id"], "private")
    submitted = user_http.post("/v1/jobs", json={
        "kind": "prune", "input": {"conversation_id": mine["id"], "keep_last": 0}})
    assert submitted.status_code == 202, submitted.text
    done = wait_status(user_http, submitted.json()["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert done["attempts"] == 1
    assert len(messages_of(http, mine["id"])) == 2
