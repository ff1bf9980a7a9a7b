"""Direct uploads: ask for an upload URL, send the file there, confirm it into a document.

Field names follow API.md (snake_case); AI Studio's clients send camelCase (`fileName`,
`fileType`, `fileSize`, `fileKey`), accepted as aliases.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from schemas.fields import EntityId


class UploadCreate(BaseModel):
    """`POST /v1/uploads`: what will be uploaded, and into which knowledge base."""

    model_config = ConfigDict(extra="forbid")

    file_name: str = Field(min_length=1, max_length=255,
                           validation_alias=AliasChoices("file_name", "fileName"))
    file_type: str = Field(min_length=1, max_length=255,
                           validation_alias=AliasChoices("file_type", "fileType"))
    file_size: int = Field(ge=1, validation_alias=AliasChoices("file_size", "fileSize"))
    knowledge_id: EntityId = Field(validation_alias=AliasChoices("knowledge_id", "knowledgeId"))


class UploadTicket(BaseModel):
    """Where to send the file: a multipart POST to `upload_url` with every one of `fields`,
    then the file as `file` (an S3 presigned POST, or Switchyard's own single-use URL).
    Confirm with `file_key` before `expires_at`."""

    upload_id: str
    upload_url: str
    file_key: str
    fields: dict[str, str]
    expires_at: datetime
    max_bytes: int
    store: str


class DocumentConfirm(BaseModel):
    """`POST /v1/knowledge/{id}/documents/confirm`: make a document of an uploaded file.
    `file_name` and `file_type`, when sent, must match what the upload was created with."""

    model_config = ConfigDict(extra="forbid")

    file_key: str = Field(min_length=1, max_length=512,
                          validation_alias=AliasChoices("file_key", "fileKey"))
    file_name: str | None = Field(default=None, max_length=255,
                                  validation_alias=AliasChoices("file_name", "fileName"))
    file_type: str | None = Field(default=None, max_length=255,
                                  validation_alias=AliasChoices("file_type", "fileType"))
    metadata: dict[str, Any] = Field(default_factory=dict)
