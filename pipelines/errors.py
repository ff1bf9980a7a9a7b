"""One error tree for every expected failure.

`DomainError`s are the caller's fault or a final state: never retried. Transient
upstream trouble is `UpstreamUnavailable`, which workers retry. Only `api/errors.py`
knows how these map to HTTP statuses and wire formats.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Expected, user-facing failure. Never retried."""

    code = "PROCESSING_ERROR"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    code = "RESOURCE_NOT_FOUND"


class JobNotFound(NotFound): ...


class ModelNotFound(DomainError):
    code = "MODEL_NOT_FOUND"


class ModelUnavailable(DomainError):
    code = "MODEL_UNAVAILABLE"


class InvalidInput(DomainError):
    code = "VALIDATION_FAILED"


class UrlNotAllowed(InvalidInput):
    """An outbound URL (webhook, model base URL) that is malformed or reaches a
    non-public address the operator has not allowed (pipelines/outbound.py)."""

    code = "URL_NOT_ALLOWED"


class HostNotResolved(UrlNotAllowed):
    """An outbound URL's host has no DNS answer: refused when the URL is submitted, retried
    when a delivery meets it (DNS trouble passes)."""


class Conflict(DomainError):
    code = "CONFLICT"


class JobCancelled(DomainError):
    code = "CANCELLED"


class UpstreamError(DomainError):
    """The upstream provider refused the request (bad key, bad request): not retried."""

    code = "UPSTREAM_ERROR"

    def __init__(self, message: str, *, status: int = 502, retry_after_s: float | None = None,
                 details: Any = None) -> None:
        super().__init__(message, details=details)
        self.status = status
        self.retry_after_s = retry_after_s


class UpstreamRateLimited(UpstreamError):
    code = "RATE_LIMIT_EXCEEDED"


class UpstreamTimeout(UpstreamError):
    code = "UPSTREAM_TIMEOUT"


class UpstreamUnavailable(Exception):
    """Provider timeout, connection error or 5xx before any output: transient, so retried."""


class UnsupportedFileType(DomainError):
    """The upload's type is not one knowledge ingestion can read."""

    code = "UNSUPPORTED_FILE_TYPE"


class EmptyDocument(DomainError):
    """The document holds no extractable text (empty, or e.g. a scanned PDF without OCR)."""

    code = "EMPTY_DOCUMENT"


class CorruptDocument(DomainError):
    """The document could not be parsed as the type it claims to be."""

    code = "CORRUPT_DOCUMENT"


class DocumentTooLarge(DomainError):
    """Reading the document would pass an ingest limit (pages, inflated bytes, elements,
    cells, chunks, memory); `details` names the limit (pipelines/ingest/limits.py)."""

    code = "DOCUMENT_TOO_LARGE"


class IngestTimedOut(DocumentTooLarge):
    """The document took longer than the ingest time limit."""

    code = "INGEST_TIMEOUT"


class MaxTokensTooLarge(InvalidInput):
    """A request asks for more output tokens than its model's `max_output_tokens`."""


class OutputTooLarge(DomainError):
    """A job's output passed a size limit (pipelines/output_limits.py, pipelines/events.py)."""

    code = "OUTPUT_TOO_LARGE"


class EventTooLarge(OutputTooLarge):
    """One event's encoded data is larger than MAX_EVENT_BYTES."""

    code = "EVENT_TOO_LARGE"


class EventStreamFull(OutputTooLarge):
    """A job has published more than EVENT_STREAM_MAX_BYTES of events."""

    code = "EVENT_STREAM_TOO_LARGE"


class ResultTooLarge(OutputTooLarge):
    """A job's encoded result is larger than MAX_RESULT_BYTES."""

    code = "RESULT_TOO_LARGE"


class InvalidCredentials(DomainError):
    """Wrong email or password (deliberately not saying which)."""

    code = "INVALID_CREDENTIALS"


class PermissionDenied(DomainError):
    """The caller is known but their role does not allow this route."""

    code = "PERMISSION_DENIED"


class RateLimited(DomainError):
    """Too many requests in a window; `retry_after_s` says when to come back."""

    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after_s: float, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class TokenBudgetExceeded(RateLimited):
    """The key has spent its daily token budget."""

    code = "TOKEN_BUDGET_EXCEEDED"


class UserNotFound(NotFound): ...


class ApiKeyNotFound(NotFound): ...


class EmailTaken(Conflict):
    """Another account already uses this email."""


class ConversationNotFound(NotFound):
    """No conversation with that id belongs to the caller (someone else's looks the same)."""


class KnowledgeBaseNotFound(NotFound):
    """No knowledge base with that id is readable by the caller (private ones of others
    look the same)."""


class DocumentNotFound(NotFound):
    """No document with that id is readable by the caller."""


class DuplicateDocument(Conflict):
    """The base already holds a file with the same content; `details.document` is it."""


class DeploymentNotFound(NotFound):
    """No deployment with that id (or the caller may not see it)."""


class DeploymentFailed(DomainError):
    """A deployment ended `failed` (its reason is the message): final, never retried."""

    code = "DEPLOYMENT_FAILED"
