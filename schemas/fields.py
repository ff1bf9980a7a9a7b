"""Field types request schemas share, so that what the API accepts is what Postgres takes.

Ids: Python's `uuid` reads `{…}`, `urn:uuid:…`, upper case and unhyphenated spellings,
asyncpg's binary UUID codec only some of them (`{…}` and `urn:uuid:…` fail as a 500),
and Postgres' text input not `urn:uuid:…`. So every id from the outside is normalised
once, here, to the canonical spelling that every layer reads.

Instants: `9999-12-31T23:59:59-23:59` is a valid ISO 8601 datetime whose UTC instant is in
year 10000, beyond Python's `datetime`; asyncpg converts to UTC on the way out and raised
`OverflowError`. An instant is converted to UTC here, where the failure is a 422.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def canonical_uuid(value: str) -> str | None:
    """`value` in canonical UUID form if it is any spelling Python's `uuid` reads, else None."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _canonical_or_given(value: str) -> str:
    # Anything else cannot name a row: lookups answer 404, as they do for unknown ids.
    return canonical_uuid(value) or value


# An id in a request body: canonical if it is a UUID in any spelling, else as given.
EntityId = Annotated[str, AfterValidator(_canonical_or_given)]


def as_utc(moment: datetime) -> datetime:
    """An aware `moment` as UTC; ValueError if that instant is outside year 1 to 9999."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{moment.isoformat()} is outside the supported range (years 1 to 9999 in UTC)"
        ) from None

