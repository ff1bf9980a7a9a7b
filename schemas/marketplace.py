"""Bodies of the knowledge marketplace routes (STING's listing fields)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from schemas.fields import EntityId


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListingCreate(_Body):
    knowledge_id: EntityId
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    price: Decimal = Field(default=Decimal(0), ge=0, le=Decimal("1000000"), decimal_places=2,
                           description="Recorded with each acquisition; no payment is taken.")
    category: str = Field(min_length=1, max_length=64)
    license_type: str = Field(default="single_use", min_length=1, max_length=64)
    preview_enabled: bool = False


class RatingCreate(_Body):
    rating: int = Field(ge=1, le=5)
    review: str | None = Field(default=None, max_length=5000)


class PreviewChunk(BaseModel):
    chunk_id: str
    filename: str
    title: str | None
    page: int | None
    content: str


class ListingRead(BaseModel):
    id: str
    knowledge_id: str
    owner_id: str
    title: str
    description: str
    price: Decimal
    category: str
    license_type: str
    preview_enabled: bool
    status: str
    rating_average: float
    rating_count: int
    acquisitions: int
    entitled: bool = Field(description="Whether the caller holds an entitlement to the base.")
    created_at: datetime
    updated_at: datetime
    unlisted_at: datetime | None
    preview: list[PreviewChunk] | None = None


class ListingList(BaseModel):
    data: list[ListingRead]
    total: int
    limit: int
    offset: int


class EntitlementRead(BaseModel):
    id: str
    listing_id: str
    knowledge_id: str
    price: Decimal
    license_type: str
    created_at: datetime


class EntitlementList(BaseModel):
    data: list[EntitlementRead]


class RatingRead(BaseModel):
    listing_id: str
    user_id: str
    rating: int
    review: str | None
    created_at: datetime
    updated_at: datetime


class RatingList(BaseModel):
    data: list[RatingRead]
