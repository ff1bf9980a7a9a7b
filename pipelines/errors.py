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
