"""Bodies of the passkey (WebAuthn) routes, shaped like STING's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PasskeyRegisterInit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=100,
                             description="A label for the passkey (e.g. 'laptop').")


class PasskeyRegisterComplete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credential: dict[str, Any] = Field(
        description="The PublicKeyCredential from navigator.credentials.create(), as JSON.")
    name: str | None = Field(default=None, max_length=100)


class PasskeyLoginInit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=320, description=(
        "Limits the options to this account's passkeys; without it any discoverable "
        "passkey for this site may answer."))


class PasskeyLoginComplete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assertion: dict[str, Any] = Field(
        description="The PublicKeyCredential from navigator.credentials.get(), as JSON.")


class PasskeyOptions(BaseModel):
    """`publicKey` options to pass to navigator.credentials.create() or .get()."""

    options: dict[str, Any]
    expires_in: int


class PasskeyRead(BaseModel):
    id: str
    name: str
    sign_count: int
    transports: list[str]
    aaguid: str | None
    created_at: datetime
    last_used_at: datetime | None


class PasskeyList(BaseModel):
    data: list[PasskeyRead]
