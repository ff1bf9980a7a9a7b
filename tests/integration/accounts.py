"""Helpers for the account tests: make users, log them in, give them keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct horse battery staple"
# For stacks whose tests log many users in from 127.0.0.1: the per-address login and
# anonymous limits are exercised in test_rate_limits.py, not tripped over here.
RELAXED_LOGIN_ENV = {"LOGIN_LIMIT_PER_ADDRESS": "100000/minute",
                     "LOGIN_LIMIT_PER_ACCOUNT": "100000/minute",
                     "AUTH_FAILURE_LIMIT_PER_ADDRESS": "100000/minute",
                     "ANONYMOUS_RATE_LIMIT_TIER": "admin"}


@dataclass
class User:
    id: str
    email: str
    password: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def unique_email(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def create_user(client: httpx.Client, admin_headers: dict[str, str], *, role: str = "user",
                email: str | None = None, tier: str = "default") -> dict[str, Any]:
    response = client.post("/v1/admin/users", headers=admin_headers, json={
        "email": email or unique_email(role), "password": PASSWORD, "role": role,
        "tier": tier})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def login(client: httpx.Client, email: str, password: str = PASSWORD) -> str:
    response = client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]  # type: ignore[no-any-return]


def create_key(client: httpx.Client, headers: dict[str, str], name: str = "k",
               **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/keys", headers=headers, json={"name": name, **extra})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def new_user(client: httpx.Client, admin_headers: dict[str, str], *, role: str = "user",
             tier: str = "default") -> User:
    """A user with a session-made API key."""
    user = create_user(client, admin_headers, role=role, tier=tier)
    token = login(client, user["email"])
    key = create_key(client, {"Authorization": f"Bearer {token}"})
    return User(id=user["id"], email=user["email"], password=PASSWORD, key=key["key"],
                key_id=key["id"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
