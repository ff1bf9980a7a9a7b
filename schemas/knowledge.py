"""Knowledge bases, documents, search and ask: the API bodies and the ingest job input."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.fields import EntityId
from schemas.jobs import JobRead

Visibility = Literal["private", "public"]
SearchMode = Literal["vector", "keyword", "hybrid"]
DocumentStatus = Literal["processing", "processed", "failed"]

MAX_TAGS = 32
MAX_BASES_PER_QUERY = 20


def _clean_tags(value: list[str]) -> list[str]:
    tags = [tag.strip() for tag in value]
    if any(not tag or len(tag) > 64 for tag in tags):
        raise ValueError("tags must be 1 to 64 characters")
    return sorted(set(tags))


class KnowledgeCreate(BaseModel):
    """`POST /v1/knowledge`. The embedding model is the server's, fixed for the base's life."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    visibility: Visibility = "private"

    _tags = field_validator("tags")(_clean_tags)


class KnowledgeUpdate(BaseModel):
    """`PATCH /v1/knowledge/{id}`: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] | None = Field(default=None, max_length=MAX_TAGS)
    visibility: Visibility | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _clean_tags(value)


class KnowledgeRead(BaseModel):
    id: str
    name: str
    description: str | None
    tags: list[str]
    visibility: Visibility
    owner_id: str
    embedding_provider: str
    embedding_model: str
    embedding_dimension: int
    document_count: int
    chunk_count: int
    created_at: datetime
    updated_at: datetime


class KnowledgeList(BaseModel):
    data: list[KnowledgeRead]
    total: int
    limit: int
    offset: int


class DocumentRead(BaseModel):
    """A document; `metadata` is the uploader's, plus `pages`, `word_count`, `processing_ms`
    once processed (those reserved keys win over the uploader's)."""

    id: str
    knowledge_id: str
    filename: str
    content_type: str | None
    file_type: str
    size_bytes: int
    sha256: str
    status: DocumentStatus
    progress: float
    error: dict[str, Any] | None
    chunk_count: int
    metadata: dict[str, Any]
    job_id: str | None
    created_at: datetime
    updated_at: datetime


class DocumentList(BaseModel):
    data: list[DocumentRead]
    total: int
    limit: int
    offset: int


class DocumentAccepted(BaseModel):
    """202 answer of an upload or re-ingest: the document and the `ingest` job working on it."""

    document: DocumentRead
    job: JobRead


class SearchFilters(BaseModel):
    """All given filters must hold. `tags`: the base has any of them; `document_types`: the
    file type (pdf, md, …); `metadata`: the document's metadata contains these key/values."""

    model_config = ConfigDict(extra="forbid")

    tags: list[str] | None = Field(default=None, max_length=MAX_TAGS)
    document_types: list[str] | None = Field(default=None, max_length=16)
    document_ids: list[EntityId] | None = Field(default=None, max_length=100)
    metadata: dict[str, Any] | None = None


class SearchRequest(BaseModel):
    """`POST /v1/knowledge/search`."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000)
    knowledge_ids: list[EntityId] = Field(min_length=1, max_length=MAX_BASES_PER_QUERY)
    mode: SearchMode = "hybrid"
    filters: SearchFilters | None = None
    limit: int = Field(default=10, ge=1, le=100)


class SearchResult(BaseModel):
    """One chunk. `score`: cosine similarity (vector), `ts_rank` normalised to 0..1
    (keyword) or the reciprocal-rank-fusion score (hybrid); the parts are kept alongside."""

    chunk_id: str
    document_id: str
    knowledge_id: str
    title: str | None
    content: str
    score: float
    vector_score: float | None = None
    keyword_score: float | None = None
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    results: list[SearchResult]
    total_results: int
    query_time: float  # milliseconds
    mode: SearchMode


class AskRequest(BaseModel):
    """`POST /v1/knowledge/ask`: `context_limit` is how many chunks the model is shown."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=10_000)
    knowledge_ids: list[EntityId] = Field(min_length=1, max_length=MAX_BASES_PER_QUERY)
    model: str = Field(min_length=1, max_length=256)
    context_limit: int = Field(default=5, ge=1, le=20)
    filters: SearchFilters | None = None
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


class AskSource(BaseModel):
    """Source `[index]` of the answer."""

    index: int
    chunk_id: str
    document_id: str
    knowledge_id: str
    filename: str | None
    title: str | None
    page: int | None
    score: float


class AskResponse(BaseModel):
    answer: str
    sources: list[AskSource]
    model: str
    usage: dict[str, int]
    job_id: str | None = None


class EmbeddingRequest(BaseModel):
    """OpenAI `POST /v1/embeddings` (strings only; token-id arrays are not accepted)."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str]
    model: str = Field(min_length=1, max_length=256)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or len(items) > 2048:
            raise ValueError("input must hold 1 to 2048 strings")
        if any(not item for item in items):
            raise ValueError("input strings must not be empty")
        return value


class IngestJob(BaseModel):
    """Input of an `ingest` job."""

    document_id: EntityId
    knowledge_id: EntityId
