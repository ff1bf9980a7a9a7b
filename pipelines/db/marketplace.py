"""Every SQL statement about the knowledge marketplace: listings, entitlements, ratings.

A listing is visible to everyone while listed; once unlisted only its owner and the users
entitled through it see it. An entitlement grants read and search access to the base
(pipelines/db/knowledge.py `readable_by`) and outlives the listing being unlisted.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Update,
    and_,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert

from pipelines.db.tables import (
    chunks,
    documents,
    marketplace_entitlements,
    marketplace_listings,
    marketplace_ratings,
)

listings = marketplace_listings
entitlements = marketplace_entitlements
ratings = marketplace_ratings

SORTS = {"created_at": listings.c.created_at, "price": listings.c.price,
         "rating": "rating_average"}


def new_id() -> str:
    return str(uuid.uuid4())


def _stats() -> list[Any]:
    return [
        select(func.coalesce(func.avg(ratings.c.rating), 0)).where(
            ratings.c.listing_id == listings.c.id).scalar_subquery().label("rating_average"),
        select(func.count()).where(ratings.c.listing_id == listings.c.id)
        .scalar_subquery().label("rating_count"),
        select(func.count()).where(entitlements.c.listing_id == listings.c.id)
        .scalar_subquery().label("acquisitions"),
    ]


def _entitled(user_id: str) -> ColumnElement[bool]:
    return exists().where(entitlements.c.listing_id == listings.c.id,
                          entitlements.c.user_id == user_id)


def visible_to(user_id: str) -> ColumnElement[bool]:
    return or_(listings.c.status == "listed", listings.c.owner_id == user_id,
               _entitled(user_id))


def insert_listing(*, listing_id: str, knowledge_id: str, owner_id: str, title: str,
                   description: str, price: Decimal, category: str, license_type: str,
                   preview_enabled: bool) -> Insert:
    """Nothing is inserted (no row) when the base already has a listed listing."""
    return (insert(listings).values(
        id=listing_id, knowledge_id=knowledge_id, owner_id=owner_id, title=title,
        description=description, price=price, category=category, license_type=license_type,
        preview_enabled=preview_enabled)
        # A literal predicate: a bound one stops matching the partial unique index once
        # asyncpg's prepared statement switches to a generic plan.
        .on_conflict_do_nothing(index_elements=["knowledge_id"],
                                index_where=text("status = 'listed'"))
        .returning(listings.c.id))


def get_listing(listing_id: str, user_id: str) -> Select:
    """The listing with its stats and whether `user_id` holds it, if visible to them."""
    return (select(*listings.c, *_stats(), _entitled(user_id).label("entitled"))
            .where(listings.c.id == listing_id, visible_to(user_id)))


def _filters(*, category: str | None, price_min: Decimal | None, price_max: Decimal | None,
             rating_min: float | None, search: str | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [listings.c.status == "listed"]
    if category:
        where.append(listings.c.category == category)
    if price_min is not None:
        where.append(listings.c.price >= price_min)
    if price_max is not None:
        where.append(listings.c.price <= price_max)
    if rating_min is not None:
        where.append(select(func.coalesce(func.avg(ratings.c.rating), 0))
                     .where(ratings.c.listing_id == listings.c.id).scalar_subquery()
                     >= rating_min)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(or_(listings.c.title.ilike(pattern), listings.c.description.ilike(pattern)))
    return where


def list_listings(user_id: str, *, sort: str, descending: bool, limit: int, offset: int,
                  **filters: Any) -> Select:
    stats = _stats()
    key: Any = SORTS[sort] if sort != "rating" else stats[0]
    order = key.desc() if descending else key.asc()
    return (select(*listings.c, *stats, _entitled(user_id).label("entitled"))
            .where(*_filters(**filters))
            .order_by(order, listings.c.created_at.desc(), listings.c.id.desc())
            .limit(limit).offset(offset))


def count_listings(**filters: Any) -> Select:
    return select(func.count()).select_from(listings).where(*_filters(**filters))


def unlist(listing_id: str, owner_id: str) -> Update:
    return (update(listings)
            .where(listings.c.id == listing_id, listings.c.owner_id == owner_id,
                   listings.c.status == "listed")
            .values(status="unlisted", unlisted_at=func.now(), updated_at=func.now())
            .returning(listings.c.id))


def preview_chunks(knowledge_id: str, limit: int) -> Select:
    """The first chunks of the base's oldest processed documents."""
    return (select(chunks.c.id, chunks.c.content, chunks.c.title, chunks.c.page,
                   documents.c.filename)
            .join(documents, documents.c.id == chunks.c.document_id)
            .where(chunks.c.knowledge_id == knowledge_id, documents.c.status == "processed")
            .order_by(documents.c.created_at, chunks.c.idx).limit(limit))


def grant(*, entitlement_id: str, listing_id: str, knowledge_id: str, user_id: str,
          price: Decimal, license_type: str) -> Insert:
    """Record an entitlement; nothing (no row) if the user already holds the base."""
    return (insert(entitlements).values(
        id=entitlement_id, listing_id=listing_id, knowledge_id=knowledge_id, user_id=user_id,
        price=price, license_type=license_type)
        .on_conflict_do_nothing(index_elements=["user_id", "knowledge_id"])
        .returning(*entitlements.c))


def entitlement(user_id: str, knowledge_id: str) -> Select:
    return select(*entitlements.c).where(entitlements.c.user_id == user_id,
                                         entitlements.c.knowledge_id == knowledge_id)


def entitlements_of(user_id: str) -> Select:
    return (select(*entitlements.c).where(entitlements.c.user_id == user_id)
            .order_by(entitlements.c.created_at.desc(), entitlements.c.id.desc()))


def holds(listing_id: str, user_id: str) -> Select:
    return select(entitlements.c.id).where(and_(entitlements.c.listing_id == listing_id,
                                                entitlements.c.user_id == user_id))


def rate(*, listing_id: str, user_id: str, rating: int, review: str | None) -> Insert:
    """One rating per user per listing; rating again replaces it."""
    stmt = insert(ratings).values(listing_id=listing_id, user_id=user_id, rating=rating,
                                  review=review)
    return stmt.on_conflict_do_update(
        index_elements=["listing_id", "user_id"],
        set_={"rating": stmt.excluded.rating, "review": stmt.excluded.review,
              "updated_at": func.now()}).returning(*ratings.c)


def ratings_of(listing_id: str, limit: int, offset: int) -> Select:
    return (select(*ratings.c).where(ratings.c.listing_id == listing_id)
            .order_by(ratings.c.updated_at.desc()).limit(limit).offset(offset))
