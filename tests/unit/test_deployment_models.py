"""Deployment bodies, and how a deployment's model status decides routing."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from pydantic import ValidationError

from pipelines.errors import ModelUnavailable
from pipelines.models import AsyncModelRegistry, ModelInfo
from pipelines.secretbox import SecretBox
from schemas.deployments import MODEL_STATUS, DeploymentCreate, DeploymentState

BASE = ModelInfo(id="d/m", provider="openai", upstream_model="m", context_window=8192,
                 owned_by="openai", base_url="http://127.0.0.1:1/v1")


def test_a_command_string_is_split_like_a_shell_and_the_port_defaults_to_auto() -> None:
    body = DeploymentCreate.model_validate({
        "name": "n", "model": "d/m",
        "target": {"type": "process", "command": "switchyard model-server --port '{port}'"}})
    assert body.target.type == "process"
    assert body.target.command == ["switchyard", "model-server", "--port", "{port}"]
    assert body.target.port == "auto" and body.target.health_path == "/v1/models"


@pytest.mark.parametrize("target", [
    {"type": "process", "command": []},
    {"type": "process", "command": ["x"], "port": 0},
    {"type": "process", "command": ["x"], "port": "any"},
    {"type": "process", "command": ["x"], "health_path": "health"},
    {"type": "process", "command": ["x", ""]},
    {"type": "endpoint"},
    {"type": "teleport"},
])
def test_a_bad_target_is_refused(target: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DeploymentCreate.model_validate({"name": "n", "model": "d/m", "target": target})


def test_every_state_has_a_model_status() -> None:
    assert set(MODEL_STATUS) == {state.value for state in DeploymentState}
    assert MODEL_STATUS["running"] == "loaded"


@pytest.mark.parametrize(("runtime", "status", "routable"), [
    (None, "available", True), ("loaded", "loaded", True), ("loading", "loading", False),
    ("unhealthy", "unhealthy", False), ("available", "available", False),
])
def test_only_a_loaded_deployment_model_is_routable(runtime: str | None, status: str,
                                                    routable: bool) -> None:
    info = replace(BASE, runtime_status=runtime)
    assert info.status == status and info.routable is routable
    assert replace(info, enabled=False).status == "disabled"


def _registry(*models: ModelInfo) -> AsyncModelRegistry:
    registry = AsyncModelRegistry(None, SecretBox("k"), ttl_s=3600,  # type: ignore[arg-type]
                                  dev={}, clock=lambda: 0.0)
    registry._models = {m.id: m for m in models}
    registry._loaded_at = 0.0
    return registry


def test_a_stopped_deployment_model_is_unavailable_without_fallbacks() -> None:
    registry = _registry(replace(BASE, runtime_status="available"))
    with pytest.raises(ModelUnavailable) as caught:
        asyncio.run(registry.resolve("d/m"))
    assert "available" in caught.value.message


def test_an_unhealthy_deployment_model_routes_to_its_fallbacks() -> None:
    fallback = replace(BASE, id="other", runtime_status=None)
    registry = _registry(replace(BASE, runtime_status="unhealthy", fallbacks=("other",)),
                         fallback)
    assert asyncio.run(registry.resolve("d/m")).id == "d/m"
    assert [m.id for m in asyncio.run(registry.chain("d/m"))] == ["other"]
    healthy = _registry(replace(BASE, runtime_status="loaded", fallbacks=("other",)),
                        fallback)
    assert [m.id for m in asyncio.run(healthy.chain("d/m"))] == ["d/m", "other"]
