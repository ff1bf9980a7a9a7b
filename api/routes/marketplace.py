"""The knowledge marketplace (STING's): list a knowledge base you own, browse listings,
acquire one (an entitlement: read and search access to the base, with the listing's price
recorded; no payment processor is involved), rate what you acquired, unlist (existing
entitlements stay). Entitled users search and ask the base like their own
(pipelines/db/knowledge.py `readable_by`); everyone else still gets 404 for it.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.engine import Row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import int_query, json_response, parse, path_id
from api.context import principal, services
from api.errors import ApiError
from api.knowledge_access import load_base
from api.openapi import doc
from pipelines.db import marketplace as market_db
from pipelines.errors import Conflict, NotFound, PermissionDenied
from schemas.marketplace import (
    EntitlementList,
    EntitlementRead,
    ListingCreate,
    ListingList,
    ListingRead,
    PreviewChunk,
    RatingCreate,
    RatingList,
    RatingRead,
)

_MAX_PAGE = 100
_PREVIEW_CHUNKS = 3
_PREVIEW_CHARS = 500
_BODY_LIMIT = 64 * 1024


class ListingNotFound(NotFound):
    code = "RESOURCE_NOT_FOUND"


def _listing_id(request: Request) -> str:
    return path_id(request, "listing_id", ListingNotFound, "listing")


def _decimal_query(request: Request, name: str) -> Decimal | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        raise ApiError(422, "VALIDATION_FAILED", f"{name} must be a number >= 0.", param=name)
    return value


def _listing_read(row: Row[Any], preview: list[PreviewChunk] | None = None) -> ListingRead:
    return ListingRead(
        id=str(row.id), knowledge_id=str(row.knowledge_id), owner_id=row.owner_id,
        title=row.title, description=row.description, price=row.price, category=row.category,
        license_type=row.license_type, preview_enabled=row.preview_enabled, status=row.status,
        rating_average=round(float(row.rating_average), 2), rating_count=row.rating_count,
        acquisitions=row.acquisitions, entitled=bool(row.entitled), created_at=row.created_at,
        updated_at=row.updated_at, unlisted_at=row.unlisted_at, preview=preview)


async def _load_listing(request: Request, listing_id: str) -> Row[Any]:
    async with services(request).autocommit.connect() as conn:
        row = (await conn.execute(market_db.get_listing(
            listing_id, principal(request).owner_id))).first()
    if row is None:
        raise ListingNotFound(f"No listing with id '{listing_id}'.")
    return row


@doc("List a knowledge base you own on the marketplace", body=ListingCreate,
     response=ListingRead, status=201, tags=["marketplace"])
async def create_listing(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    body = await parse(request, ListingCreate, _BODY_LIMIT)
    base = await load_base(svc, owner_id, body.knowledge_id)
    if base.owner_id != owner_id:
        raise PermissionDenied("Only the owner of a knowledge base may list it.")
    async with svc.engine.begin() as conn:
        created = (await conn.execute(market_db.insert_listing(
            listing_id=market_db.new_id(), knowledge_id=str(base.id), owner_id=owner_id,
            title=body.title, description=body.description, price=body.price,
            category=body.category, license_type=body.license_type,
            preview_enabled=body.preview_enabled))).first()
    if created is None:
        raise Conflict("This knowledge base is already listed; unlist it first.")
    return json_response(_listing_read(await _load_listing(request, str(created.id))),
                         status=201)


@doc("Browse listed knowledge bases", response=ListingList, tags=["marketplace"],
     query={"category": "string", "price_min": "number", "price_max": "number",
            "rating_min": "number", "search": "string", "sort": "string",
            "order": "string", "limit": "integer", "offset": "integer"})
async def list_listings(request: Request) -> Response:
    params = request.query_params
    sort = params.get("sort", "created_at")
    if sort not in market_db.SORTS:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"sort must be one of {', '.join(market_db.SORTS)}.", param="sort")
    order = params.get("order", "asc" if sort == "price" else "desc")
    if order not in ("asc", "desc"):
        raise ApiError(422, "VALIDATION_FAILED", "order must be asc or desc.", param="order")
    rating_min = _decimal_query(request, "rating_min")
    filters: dict[str, Any] = {
        "category": params.get("category") or None,
        "price_min": _decimal_query(request, "price_min"),
        "price_max": _decimal_query(request, "price_max"),
        "rating_min": float(rating_min) if rating_min is not None else None,
        "search": params.get("search") or None,
    }
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 2**31 - 1)
    async with services(request).autocommit.connect() as conn:
        total = (await conn.execute(market_db.count_listings(**filters))).scalar_one()
        rows = (await conn.execute(market_db.list_listings(
            principal(request).owner_id, sort=sort, descending=order == "desc", limit=limit,
            offset=offset, **filters))).all()
    return json_response(ListingList(data=[_listing_read(r) for r in rows], total=total,
                                     limit=limit, offset=offset))


@doc("One listing, with a preview of a few chunks when its owner enabled it",
     response=ListingRead, tags=["marketplace"])
async def get_listing(request: Request) -> Response:
    row = await _load_listing(request, _listing_id(request))
    preview = None
    if row.preview_enabled:
        async with services(request).autocommit.connect() as conn:
            chunks = (await conn.execute(market_db.preview_chunks(
                str(row.knowledge_id), _PREVIEW_CHUNKS))).all()
        preview = [PreviewChunk(chunk_id=str(c.id), filename=c.filename, title=c.title,
                                page=c.page, content=c.content[:_PREVIEW_CHARS])
                   for c in chunks]
    return json_response(_listing_read(row, preview))


@doc("Unlist your listing; whoever acquired it keeps access", response=ListingRead,
     tags=["marketplace"])
async def unlist(request: Request) -> Response:
    listing_id = _listing_id(request)
    row = await _load_listing(request, listing_id)
    if row.owner_id != principal(request).owner_id:
        raise ListingNotFound(f"No listing of yours with id '{listing_id}'.")
    async with services(request).engine.begin() as conn:
        await conn.execute(market_db.unlist(listing_id, row.owner_id))
    return json_response(_listing_read(await _load_listing(request, listing_id)))


@doc("Acquire a listing: read and search access to its knowledge base, with the price "
     "recorded (no payment is taken)", response=EntitlementRead, status=201,
     tags=["marketplace"])
async def acquire(request: Request) -> Response:
    who = principal(request)
    listing_id = _listing_id(request)
    row = await _load_listing(request, listing_id)
    if row.status != "listed" and not row.entitled:
        raise ListingNotFound(f"No listing with id '{listing_id}'.")
    if row.owner_id == who.owner_id:
        raise Conflict("You own this knowledge base already.")
    async with services(request).engine.begin() as conn:
        granted = (await conn.execute(market_db.grant(
            entitlement_id=market_db.new_id(), listing_id=listing_id,
            knowledge_id=str(row.knowledge_id), user_id=who.owner_id, price=row.price,
            license_type=row.license_type))).first()
        status = 201
        if granted is None:  # acquired before: the same entitlement, not a second one
            granted = (await conn.execute(market_db.entitlement(
                who.owner_id, str(row.knowledge_id)))).one()
            status = 200
    return json_response(_entitlement_read(granted), status=status)


def _entitlement_read(row: Row[Any]) -> EntitlementRead:
    return EntitlementRead(id=str(row.id), listing_id=str(row.listing_id),
                           knowledge_id=str(row.knowledge_id), price=row.price,
                           license_type=row.license_type, created_at=row.created_at)


@doc("Rate a listing you acquired (1-5, once; rating again replaces it)", body=RatingCreate,
     response=RatingRead, tags=["marketplace"])
async def rate(request: Request) -> Response:
    who = principal(request)
    listing_id = _listing_id(request)
    row = await _load_listing(request, listing_id)
    if not row.entitled:
        raise PermissionDenied("Only users who acquired this listing may rate it.")
    body = await parse(request, RatingCreate, _BODY_LIMIT)
    async with services(request).engine.begin() as conn:
        rated = (await conn.execute(market_db.rate(
            listing_id=listing_id, user_id=who.owner_id, rating=body.rating,
            review=body.review))).one()
    return json_response(_rating_read(rated))


def _rating_read(row: Row[Any]) -> RatingRead:
    return RatingRead(listing_id=str(row.listing_id), user_id=row.user_id, rating=row.rating,
                      review=row.review, created_at=row.created_at, updated_at=row.updated_at)


@doc("A listing's ratings, newest first", response=RatingList, tags=["marketplace"],
     query={"limit": "integer", "offset": "integer"})
async def list_ratings(request: Request) -> Response:
    listing_id = _listing_id(request)
    await _load_listing(request, listing_id)
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 2**31 - 1)
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(market_db.ratings_of(listing_id, limit, offset))).all()
    return json_response(RatingList(data=[_rating_read(r) for r in rows]))


@doc("The knowledge bases you acquired", response=EntitlementList, tags=["marketplace"])
async def my_entitlements(request: Request) -> Response:
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(market_db.entitlements_of(
            principal(request).owner_id))).all()
    return json_response(EntitlementList(data=[_entitlement_read(r) for r in rows]))


routes = [
    Route("/v1/marketplace/listings", create_listing, methods=["POST"]),
    Route("/v1/marketplace/listings", list_listings, methods=["GET"]),
    Route("/v1/marketplace/listings/{listing_id}", get_listing, methods=["GET"]),
    Route("/v1/marketplace/listings/{listing_id}", unlist, methods=["DELETE"]),
    Route("/v1/marketplace/listings/{listing_id}/acquire", acquire, methods=["POST"]),
    Route("/v1/marketplace/listings/{listing_id}/ratings", rate, methods=["POST"]),
    Route("/v1/marketplace/listings/{listing_id}/ratings", list_ratings, methods=["GET"]),
    Route("/v1/marketplace/entitlements", my_entitlements, methods=["GET"]),
]
