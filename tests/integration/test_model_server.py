"""`switchyard model-server` as a process of its own, driven by the real openai SDK: the
dev models over the OpenAI wire format, whole and streamed, and a refused port."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from api.devservices import free_port, log_tail, spawn, stop_process

PROJECT_DIR = Path(__file__).resolve().parents[2]


def model_server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "api.cli", "model-server", "--host", "127.0.0.1",
            "--port", str(port)]


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log_tail(log)
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("model server never became healthy\n" + log_tail(log))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "model-server.log"
    process = spawn(model_server_command(port), log_path=log, cwd=PROJECT_DIR)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, process, log)
        yield base_url
    finally:
        stop_process(process, timeout_s=10)


def test_the_model_server_lists_the_dev_models_and_answers_through_the_openai_sdk(
    server: str,
) -> None:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused") as client:
        assert sorted(m.id for m in client.models.list()) == ["dev/echo", "dev/lorem"]
        reply = client.chat.completions.create(
            model="dev/echo", messages=[{"role": "user", "content": "say these words back"}])
    assert reply.choices[0].message.content == "say these words back"
    assert reply.usage is not None and reply.usage.completion_tokens == 4


def test_the_model_server_streams_chunks_then_usage(server: str) -> None:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused") as client:
        stream = client.chat.completions.create(
            model="dev/lorem", max_tokens=5, stream=True,
            stream_options={"include_usage": True}, messages=[{"role": "user", "content": "go"}])
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ["lorem", "ipsum", "dolor", "sit", "amet"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_an_unknown_model_is_a_404_in_openai_shape(server: str) -> None:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0) as client, \
            pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "nope" in caught.value.message


def test_a_port_in_use_makes_the_model_server_exit_non_zero(server: str,
                                                             tmp_path: Path) -> None:
    port = int(server.rsplit(":", 1)[1])
    process = spawn(model_server_command(port), log_path=tmp_path / "second.log",
                    cwd=PROJECT_DIR)
    assert process.wait(timeout=30) != 0
    assert "address already in use" in log_tail(tmp_path / "second.log")
