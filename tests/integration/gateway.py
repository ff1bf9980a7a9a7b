"""Helpers for tests that use Switchyard as a gateway: register models, make user keys."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

UPSTREAM_KEY = "sk-upstream-SECRET-0123456789abcdef"


def register_model(stack: Any, upstream_base_url: str, *, provider: str = "openai",
                   model_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """Register a model pointing at a (fake) upstream through the admin route."""
    body = {
        "id": model_id or f"test-{provider}-{uuid.uuid4().hex[:8]}",
        "provider": provider,
        "upstream_model": f"upstream-{provider}",
        "base_url": upstream_base_url,
        "api_key": UPSTREAM_KEY,
        "context_window": 32_000,
        "capabilities": ["chat", "streaming", "tools", "vision"],
        "input_price_per_mtok": 1.5,
        "output_price_per_mtok": 6.0,
        "timeout_s": 5,
        **fields,
    }
    response = httpx.post(f"{stack.base_url}/v1/admin/models", json=body,
                          headers=stack.headers, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def new_user_key(stack: Any, *, role: str = "user") -> str:
    """A fresh user's API key (`sy-…`), made through the admin and key routes."""
    email = f"user-{uuid.uuid4().hex[:10]}@example.com"
    password = "correct horse battery staple"
    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        created = http.post("/v1/admin/users", headers=stack.headers,
                            json={"email": email, "password": password, "role": role})
        assert created.status_code == 201, created.text
        login = http.post("/v1/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        key = http.post("/v1/keys", headers={"Authorization": f"Bearer {token}"},
                        json={"name": "test"})
        assert key.status_code == 201, key.text
        return key.json()["key"]  # type: ignore[no-any-return]
