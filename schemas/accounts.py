"""Bodies of the auth, API key and admin routes. No model here ever carries a stored secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.fields import as_utc
from schemas.usage import TokenUsageReport

Role = Literal["user", "viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("user", "viewer", "operator", "admin")
# What a role may do beyond a user's own rows: the one table (api/auth.py enforces it).
# `read`: every admin route that only reads (jobs, queues, workers, audit, system metrics,
# models and deployments status); `act_jobs`: retry, cancel, bulk, pause, resume, purge;
# `admin`: users, models, deployments and everything else. An unknown role may do nothing.
Permission = Literal["read", "act_jobs", "admin"]
READ: Permission = "read"
ACT_JOBS: Permission = "act_jobs"
ADMIN: Permission = "admin"
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset({READ, ACT_JOBS, ADMIN}),
    "operator": frozenset({READ, ACT_JOBS}),
    "viewer": frozenset({READ}),
    "user": frozenset(),
}
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Body):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class RegisterRequest(_Body):
    email: str = Field(min_length=3, max_length=320, pattern=_EMAIL)
    password: str = Field(min_length=8, max_length=1024)
    name: str | None = Field(default=None, max_length=200)


class UserCreate(RegisterRequest):
    """Admin-created accounts may have any role and get a rate-limit tier."""

    role: Role = "user"
    tier: str = Field(default="default", min_length=1, max_length=64)


class UserUpdate(_Body):
    name: str | None = Field(default=None, max_length=200)
    role: Role | None = None
    tier: str | None = Field(default=None, min_length=1, max_length=64)
    is_active: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1024)


class UserRead(BaseModel):
    id: str
    email: str
    name: str | None
    role: Role
    tier: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


class UserList(BaseModel):
    users: list[UserRead]
    total: int
    limit: int
    offset: int


class LoginResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    user: UserRead


class LogoutResponse(BaseModel):
    revoked: bool


class SessionRead(BaseModel):
    authenticated: bool
    role: str = Field(description="The caller's role (the bootstrap key: admin).")
    permissions: list[Permission] = Field(
        description="What the role may do on the admin routes: read, act_jobs, admin.")
    user: UserRead | None
    via: Literal["api_key", "session", "bootstrap"]
    key_id: str | None
    scopes: list[str]


class KeyCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(default_factory=list, max_length=32)
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at needs a timezone (e.g. 2030-01-01T00:00:00Z)")
        return None if value is None else as_utc(value)

    @field_validator("scopes")
    @classmethod
    def _scope_names(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not 0 < len(scope) <= 64:
                raise ValueError("each scope must be 1 to 64 characters")
        return value


class KeyRead(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    key: str = Field(description="The full key. Shown once; store it now.")


class KeyList(BaseModel):
    data: list[KeyRead]


class KeyValidation(BaseModel):
    valid: bool
    user_id: str
    role: Role
    key_id: str | None
    scopes: list[str]


class UsageRow(BaseModel):
    owner_id: str
    kind: str
    jobs: int
    succeeded: int
    failed: int


class UsageReport(BaseModel):
    usage: list[UsageRow]
    # Tokens and cost of completed chat jobs (api/routes/usage.py), filtered by the
    # `from`, `to`, `owner_id` and `key_id` query parameters.
    tokens: TokenUsageReport | None = None


class QueueStatus(BaseModel):
    name: str
    queued: int
    delayed: int
    messages: int = Field(description="Queued plus in flight (not yet acknowledged).")


class WorkerStatus(BaseModel):
    id: str
    last_seen_s_ago: float
    info: dict[str, Any] | None


class SystemStatus(BaseModel):
    queues: list[QueueStatus]
    workers: list[WorkerStatus]
    versions: dict[str, str]
