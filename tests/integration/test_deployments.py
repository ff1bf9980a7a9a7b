"""Deployments end to end, with real processes: the project's model server launched and
supervised by deploy workers, chat through the openai SDK reaching it, crashes, restarts,
adoption after a worker is killed, endpoint health, load/unload, model-status frames, cost
accrual and bad input — real uvicorn, dramatiq worker processes, Postgres and Redis."""

from __future__ import annotations

import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect as ws_connect

from api.devservices import free_port, spawn, stop_process
from tests.fakes.upstream import FakeUpstream
from tests.integration.accounts import new_user
from tests.integration.conftest import PROJECT_DIR, Stack, StartStack
from tests.integration.jobclient import client, poll, wait_status

FAST = {
    "DEPLOY_TICK_S": "0.2", "DEPLOY_LEASE_TTL_S": "2", "DEPLOY_HEALTH_INTERVAL_S": "0.3",
    "DEPLOY_HEALTH_TIMEOUT_S": "1", "DEPLOY_FAILURE_THRESHOLD": "2",
    "DEPLOY_START_TIMEOUT_S": "30", "DEPLOY_RESTART_BACKOFF_S": "0.2",
    "DEPLOY_STOP_GRACE_S": "3", "DEPLOY_MAX_RESTARTS": "3", "DEPLOY_COST_HOUR_S": "2",
    "MODEL_CACHE_TTL_S": "0", "MAX_LOADED_MODELS": "2", "UPSTREAM_MAX_RETRIES": "0",
}
SERVER = [sys.executable, "-m", "api.cli", "model-server", "--host", "{host}",
          "--port", "{port}"]


def _forget_deployments(database_url: str) -> None:
    """Every stack of the run shares the database, and a stack's supervisors run whatever
    deployment is wanted: each test starts and ends with none."""
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        db.execute("DELETE FROM deployments")
        db.execute("DELETE FROM models WHERE source = 'deployment'")


@pytest.fixture
def fast(start_stack: StartStack, database_url: str) -> Iterator[Stack]:
    _forget_deployments(database_url)
    # A 2-core machine shared with other suites: worker start-up can take a while.
    stack = start_stack(worker_processes=2, env=FAST, ready_timeout_s=180)
    yield stack
    stack.stop()
    _forget_deployments(database_url)


def deploy(http: httpx.Client, *, model: str | None = None, **body: Any) -> dict[str, Any]:
    payload = {"name": "dev server", "model": model or f"deployed/{uuid.uuid4().hex[:8]}",
               "upstream_model": "dev/echo",
               "target": {"type": "process", "command": SERVER, "port": "auto"}, **body}
    response = http.post("/v1/deployments", json=payload)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_state(http: httpx.Client, deployment_id: str, state: str,
               timeout_s: float = 40.0, **expect: Any) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = http.get(f"/v1/deployments/{deployment_id}").json()
        ok = last.get("state") == state and all(last.get(k) == v for k, v in expect.items())
        return last if ok else None

    try:
        return poll(check, timeout_s, interval_s=0.1, what=f"deployment to be {state}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last}") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def chat(stack: Stack, model: str, text: str) -> str:
    with openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.admin_key,
                       max_retries=0) as sdk:
        reply = sdk.chat.completions.create(model=model,
                                            messages=[{"role": "user", "content": text}])
    return reply.choices[0].message.content or ""


def model_entry(http: httpx.Client, model: str) -> dict[str, Any] | None:
    listing = http.get("/v1/models").json()
    return next((m for m in listing["data"] if m["id"] == model), None)


def servers_of(model_pid: int) -> list[int]:
    """Live model-server processes: the one recorded, and any other stray one (none)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        if b"model-server" in cmdline and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def test_a_process_deployment_runs_serves_chat_restarts_after_a_crash_and_stops(
    fast: Stack,
) -> None:
    with client(fast) as http:
        accepted = deploy(http, estimated_hourly_cost=3.6)
        dep = accepted["deployment"]
        job = wait_status(http, accepted["job"]["id"], timeout_s=40)
        assert job["status"] == "succeeded", job
        running = wait_state(http, dep["id"], "running")
        assert running["pid"] and running["port"] and running["host"]
        assert running["restart_count"] == 0 and running["health"]["last_check_at"]
        assert model_entry(http, dep["model"])["status"] == "loaded"  # type: ignore[index]
        assert chat(fast, dep["model"], "through the deployment") == "through the deployment"
        stats = http.get(f"/v1/models/{dep['model']}").json()
        assert stats["inference_count"] == 1 and stats["last_used"]
        assert stats["avg_response_time"] > 0 and stats["status"] == "loaded"

        first_pid = running["pid"]
        os.kill(first_pid, signal.SIGKILL)
        again = wait_state(http, dep["id"], "running", restart_count=1)
        assert again["pid"] != first_pid
        assert again["first_failure"]["reason"].startswith("the process exited")
        assert chat(fast, dep["model"], "after the crash") == "after the crash"
        logs = http.get(f"/v1/deployments/{dep['id']}/logs").json()
        assert logs["deployment_id"] == dep["id"] and isinstance(logs["data"], list)

        # Cost accrues by the (shortened, 2 s) hour: 3.6/h is 0.001 per hour-second.
        costly = poll(lambda: (d := http.get(f"/v1/deployments/{dep['id']}").json())
                      ["cost_so_far"] > 0.002 and d, 20)
        usage = http.get("/v1/admin/usage", params={"group_by": "model"})
        assert usage.status_code == 200, usage.text
        assert dep["model"] in usage.text
        resources = http.get("/v1/resources").json()["data"]
        mine = next(r for r in resources if r["id"] == dep["id"])
        assert mine["estimated_hourly_cost"] == 3.6 and mine["cost_so_far"] > 0
        assert costly["uptime_s"] > 0

        stopped = http.post(f"/v1/deployments/{dep['id']}/stop")
        assert stopped.status_code == 202, stopped.text
        wait_status(http, stopped.json()["job"]["id"], timeout_s=30)
        final = wait_state(http, dep["id"], "stopped")
        assert final["pid"] is None and final["restart_count"] == 1
        assert not pid_alive(again["pid"])
        assert model_entry(http, dep["model"])["status"] == "available"  # type: ignore[index]
        with pytest.raises(openai.APIStatusError) as caught:
            chat(fast, dep["model"], "nobody home")
        assert caught.value.status_code == 503


def test_killing_the_supervising_worker_gets_the_deployment_adopted_by_another(
    fast: Stack,
) -> None:
    with client(fast) as http:
        dep = deploy(http)["deployment"]
        running = wait_state(http, dep["id"], "running")
        os.kill(_supervisor_pid(fast, dep["id"]), signal.SIGKILL)
        adopted = poll(lambda: (d := http.get(f"/v1/deployments/{dep['id']}").json())
                       ["state"] == "running" and d["pid"] != running["pid"] and d, 40,
                       interval_s=0.1)
        assert not pid_alive(running["pid"])
        assert servers_of(adopted["pid"]) == [adopted["pid"]]
        assert chat(fast, dep["model"], "adopted") == "adopted"
        http.post(f"/v1/deployments/{dep['id']}/stop")
        wait_state(http, dep["id"], "stopped")


def _supervisor_pid(stack: Stack, deployment_id: str) -> int:
    import psycopg

    url = stack.env["DATABASE_URL"]
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT supervisor FROM deployments WHERE id = %s",
                           (deployment_id,)).fetchone()
    assert row is not None and row[0]
    return int(row[0].rsplit(":", 1)[1])


@pytest.fixture
def external_server(tmp_path: Any) -> Iterator[tuple[int, list[Any]]]:
    port = free_port()
    holder: list[Any] = []

    def start() -> None:
        holder.append(spawn([part.replace("{host}", "127.0.0.1").replace("{port}", str(port))
                             for part in SERVER], log_path=tmp_path / "ext.log",
                            cwd=PROJECT_DIR))

    holder.append(start)
    start()
    yield port, holder
    for item in holder[1:]:
        stop_process(item, timeout_s=5)


def test_an_endpoint_deployment_goes_unhealthy_when_its_server_dies_and_recovers(
    fast: Stack, external_server: tuple[int, list[Any]],
) -> None:
    port, holder = external_server
    with client(fast) as http, \
            openai.OpenAI(base_url=f"{fast.base_url}/v1", api_key=fast.admin_key,
                          max_retries=0) as sdk, \
            anthropic.Anthropic(base_url=fast.base_url, api_key=fast.admin_key,
                                max_retries=0) as claude:
        response = http.post("/v1/deployments", json={
            "name": "external", "model": f"ext/{uuid.uuid4().hex[:8]}",
            "upstream_model": "dev/lorem",
            "target": {"type": "endpoint", "base_url": f"http://127.0.0.1:{port}/v1"}})
        assert response.status_code == 202, response.text
        dep = response.json()["deployment"]
        wait_state(http, dep["id"], "running")
        reply = sdk.chat.completions.create(model=dep["model"], max_tokens=3,
                                            messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "lorem ipsum dolor"
        streamed = sdk.chat.completions.create(model=dep["model"], max_tokens=4, stream=True,
                                               messages=[{"role": "user", "content": "x"}])
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
            "lorem ipsum dolor sit"
        message = claude.messages.create(model=dep["model"], max_tokens=2,
                                         messages=[{"role": "user", "content": "x"}])
        assert message.content[0].text == "lorem ipsum"  # type: ignore[union-attr]

        stop_process(holder[1], timeout_s=5)
        wait_state(http, dep["id"], "unhealthy")
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model=dep["model"],
                                        messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 503
        assert "unhealthy" in caught.value.message
        with pytest.raises(anthropic.APIStatusError) as refused:
            claude.messages.create(model=dep["model"], max_tokens=2,
                                   messages=[{"role": "user", "content": "x"}])
        assert refused.value.status_code == 503
        assert refused.value.body["type"] == "error"  # type: ignore[index]

        holder[0]()
        wait_state(http, dep["id"], "running")
        assert sdk.chat.completions.create(
            model=dep["model"], max_tokens=2,
            messages=[{"role": "user", "content": "x"}]).choices[0].message.content == \
            "lorem ipsum"


def test_an_ollama_endpoint_is_warmed_on_load_and_evicted_on_unload(fast: Stack) -> None:
    with FakeUpstream("openai", models=["llama3"]) as ollama, client(fast) as http:
        made = http.post("/v1/deployments", json={
            "name": "ollama", "model": f"ollama/{uuid.uuid4().hex[:8]}",
            "upstream_model": "llama3", "start": False,
            "target": {"type": "endpoint", "base_url": ollama.base_url, "keep_alive": "30m"}})
        assert made.status_code == 201, made.text
        model = made.json()["model"]
        loaded = http.post(f"/v1/models/{model}/load")
        assert loaded.status_code == 202, loaded.text
        assert wait_status(http, loaded.json()["job"]["id"], timeout_s=30)["status"] == \
            "succeeded"
        unloaded = http.post(f"/v1/models/{model}/unload")
        assert wait_status(http, unloaded.json()["job"]["id"], timeout_s=30)["status"] == \
            "succeeded"
        generates = [r.body for r in ollama.requests if r.path == "/api/generate"]
        assert generates == [{"model": "llama3", "keep_alive": "30m"},
                             {"model": "llama3", "keep_alive": 0}]


def test_load_and_unload_respect_max_loaded(fast: Stack) -> None:
    with client(fast) as http:
        made = []
        for _ in range(3):
            response = http.post("/v1/deployments", json={
                "name": "lazy", "model": f"lazy/{uuid.uuid4().hex[:8]}",
                "upstream_model": "dev/echo", "start": False,
                "target": {"type": "process", "command": SERVER}})
            assert response.status_code == 201, response.text
            made.append(response.json())
        # Only the ones made here count: other tests' deployments share the database.
        ids = [d["model"] for d in made]
        first = http.post(f"/v1/models/{ids[0]}/load")
        assert first.status_code == 202, first.text
        second = http.post(f"/v1/models/{ids[1]}/load")
        assert second.status_code == 202, second.text
        loaded = poll(lambda: (lst := http.get("/v1/models").json()) and
                      set(ids[:2]) <= set(lst["loaded_models"]) and lst, 40, interval_s=0.2)
        assert loaded["max_loaded"] == 2
        refused = http.post(f"/v1/models/{ids[2]}/load")
        assert refused.status_code == 409, refused.text
        unload = http.post(f"/v1/models/{ids[0]}/unload")
        assert unload.status_code == 202
        wait_status(http, unload.json()["job"]["id"], timeout_s=30)
        third = http.post(f"/v1/models/{ids[2]}/load")
        assert third.status_code == 202, third.text
        wait_status(http, third.json()["job"]["id"], timeout_s=40)
        assert http.post("/v1/models/dev/echo/load").status_code == 409
        assert http.post("/v1/models/no-such-model/load").status_code == 404
        for model in ids[1:]:
            http.post(f"/v1/models/{model}/unload")


def test_the_model_status_channel_and_the_events_stream_see_each_transition_in_order(
    fast: Stack,
) -> None:
    ws_url = fast.base_url.replace("http://", "ws://") + "/v1/ws/chat"
    frames: list[dict[str, Any]] = []
    with client(fast) as http, ws_connect(
            ws_url, additional_headers=fast.headers) as ws:
        ws.send(orjson.dumps({"type": "subscribe", "channel": "model_status"}).decode())
        assert orjson.loads(ws.recv(timeout=10))["type"] == "subscribed"
        dep = deploy(http)["deployment"]
        wait_state(http, dep["id"], "running")
        http.post(f"/v1/deployments/{dep['id']}/stop")
        wait_state(http, dep["id"], "stopped")
        while not frames or frames[-1]["type"] != "model_unloaded":
            frame = orjson.loads(ws.recv(timeout=20))
            if frame.get("model") == dep["model"]:
                frames.append(frame)
    kinds = [f["type"] for f in frames]
    assert kinds == ["model_loading", "model_loading", "model_loaded", "model_unloading",
                     "model_unloaded"], kinds
    assert [f["state"] for f in frames] == ["provisioning", "starting", "running", "stopping",
                                            "stopped"]

    seen: list[str] = []
    done = threading.Event()
    with httpx.Client(base_url=fast.base_url, headers=fast.headers, timeout=10) as http, \
            connect_sse(http, "GET", "/v1/deployments/events") as source:
        for event in source.iter_sse():
            data = orjson.loads(event.data)
            if event.event == "deployment.state" and data["deployment_id"] == dep["id"]:
                seen.append(data["state"])
                if data["state"] == "stopped":
                    done.set()
                    break
    assert seen == ["provisioning", "starting", "running", "stopping", "stopped"]


def test_bad_deployments_are_refused_or_fail_with_a_reason_and_leave_nothing_running(
    fast: Stack,
) -> None:
    with client(fast) as http:
        bad = [
            {"name": "x", "model": "m1", "target": {"type": "endpoint",
                                                   "base_url": "ftp://nowhere"}},
            {"name": "x", "model": "m2", "target": {"type": "endpoint",
                                                   "base_url": "http://169.254.169.254/v1"}},
            {"name": "x", "model": "m3", "target": {"type": "process", "command": []}},
            {"name": "x", "model": "m4", "target": {"type": "process", "command": ["x"],
                                                   "port": 70000}},
            {"name": "x", "model": "dev/echo", "target": {"type": "process",
                                                          "command": ["x"]}},
            {"name": "x", "model": "m5", "target": {"type": "teleport"}},
        ]
        for body in bad:
            response = http.post("/v1/deployments", json=body)
            assert 400 <= response.status_code < 500, (body, response.text)
            assert response.json()["error"]["code"]

        exits = deploy(http, target={"type": "process",
                                     "command": [sys.executable, "-c", "raise SystemExit(3)"]})
        failed = wait_state(http, exits["deployment"]["id"], "failed")
        assert "exited with code 3" in failed["state_message"]
        assert failed["first_failure"]["reason"].startswith("the process exited")
        job = wait_status(http, exits["job"]["id"], timeout_s=30)
        assert job["status"] == "failed" and job["error"]["code"] == "DEPLOYMENT_FAILED"
        gone = http.delete(f"/v1/deployments/{exits['deployment']['id']}")
        assert gone.status_code == 202, gone.text
        assert wait_status(http, gone.json()["job"]["id"], timeout_s=30)["status"] == \
            "succeeded"
        assert http.get(f"/v1/deployments/{exits['deployment']['id']}").status_code == 404
        assert model_entry(http, exits["deployment"]["model"]) is None
        assert http.get(f"/v1/deployments/{uuid.uuid4()}").status_code == 404
        assert http.get("/v1/deployments/not-a-uuid").status_code == 404
        assert http.get(f"/v1/deployments/%7B{uuid.uuid4()}%7D").status_code == 404

        unknown = deploy(http, upstream_model="no-such-model")
        failed = wait_state(http, unknown["deployment"]["id"], "failed")
        assert "does not serve the model 'no-such-model'" in failed["state_message"]

        taken = free_port()
        with __import__("socket").socket() as sock:
            sock.bind(("127.0.0.1", taken))
            sock.listen()
            in_use = deploy(http, target={"type": "process", "command": SERVER,
                                          "port": taken})
            failed = wait_state(http, in_use["deployment"]["id"], "failed")
        assert f"port {taken} is in use" in failed["state_message"]

        never = deploy(http, target={"type": "process", "health_path": "/never",
                                     "command": SERVER})
        failed = wait_state(http, never["deployment"]["id"], "failed", timeout_s=60)
        assert "not healthy within" in failed["state_message"]
        assert failed["pid"] is None
        assert servers_of(0) == [] or all(
            pid != failed.get("pid") for pid in servers_of(0))


def test_deployments_are_for_admins_and_users_see_only_routable_models(fast: Stack) -> None:
    with client(fast) as http:
        user = new_user(http, fast.headers)
        parked = http.post("/v1/deployments", json={
            "name": "parked", "model": f"parked/{uuid.uuid4().hex[:8]}", "start": False,
            "fallbacks": ["dev/echo"], "target": {"type": "process", "command": SERVER}})
        assert parked.status_code == 201
        model = parked.json()["model"]
        # Stopped, so its fallback answers; its row is the deployment's, not an admin's.
        assert chat(fast, model, "answered by the fallback") == "answered by the fallback"
        assert http.put(f"/v1/admin/models/{model}",
                        json={"description": "x"}).status_code == 409
        assert http.delete(f"/v1/admin/models/{model}").status_code == 409
        bad_fallback = http.post("/v1/deployments", json={
            "name": "x", "model": "fb/x", "fallbacks": ["no/such"],
            "target": {"type": "process", "command": SERVER}})
        assert bad_fallback.status_code == 422, bad_fallback.text
        as_user = {"Authorization": f"Bearer {user.key}"}
        assert http.get("/v1/deployments", headers=as_user).status_code == 403
        assert http.post("/v1/deployments", headers=as_user, json={}).status_code == 403
        assert http.get(f"/v1/deployments/{parked.json()['id']}",
                        headers=as_user).status_code == 403
        assert http.get("/v1/resources", headers=as_user).status_code == 403
        assert http.post(f"/v1/models/{model}/load", headers=as_user).status_code == 403
        listing = http.get("/v1/models", headers=as_user).json()
        assert model not in [m["id"] for m in listing["data"]]
        assert model in [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert http.get(f"/v1/models/{model}", headers=as_user).status_code == 404
        pricing = http.get("/v1/pricing", headers=as_user).json()
        assert "deployments" not in pricing and pricing["models"]


CRASHY = [sys.executable, "-c", "\n".join([
    "import http.server, json, os, threading",
    "class H(http.server.BaseHTTPRequestHandler):",
    "    def do_GET(self):",
    "        body = json.dumps({'object': 'list', 'data': [{'id': 'dev/echo'}]}).encode()",
    "        self.send_response(200)",
    "        self.send_header('Content-Length', str(len(body)))",
    "        self.end_headers()",
    "        self.wfile.write(body)",
    "    def log_message(self, *args):",
    "        pass",
    "server = http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H)",
    "print('serving', flush=True)",
    "threading.Timer(1.0, lambda: os._exit(1)).start()",
    "server.serve_forever()",
])]


def test_an_admin_restart_replaces_the_server_and_a_crash_loop_ends_failed(
    fast: Stack,
) -> None:
    with client(fast) as http:
        dep = deploy(http)["deployment"]
        running = wait_state(http, dep["id"], "running")
        restarted = http.post(f"/v1/deployments/{dep['id']}/restart")
        assert restarted.status_code == 202, restarted.text
        job = wait_status(http, restarted.json()["job"]["id"], timeout_s=40)
        assert job["status"] == "succeeded", job
        again = wait_state(http, dep["id"], "running")
        assert again["pid"] != running["pid"] and not pid_alive(running["pid"])
        assert again["restart_count"] == 0  # an admin's restart is not a crash
        http.post(f"/v1/deployments/{dep['id']}/stop")

        crashy = deploy(http, target={"type": "process", "command": CRASHY})["deployment"]
        failed = wait_state(http, crashy["id"], "failed", timeout_s=90)
        assert failed["restart_count"] == 3  # DEPLOY_MAX_RESTARTS
        assert failed["state_message"].startswith("gave up after 3 restarts")
        assert failed["first_failure"]["reason"] == "the process exited with code 1"
        assert failed["pid"] is None
        logs = http.get(f"/v1/deployments/{crashy['id']}/logs").json()["data"]
        assert [entry["line"] for entry in logs].count("serving") == 4
        wait_state(http, dep["id"], "stopped")
