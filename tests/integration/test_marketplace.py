"""The knowledge marketplace end to end: a base's owner lists it; others browse (filters,
sort, paging), see a preview, acquire it (an entitlement with the price recorded), then
search and ask it like their own; ratings by entitled users only; unlisting keeps
entitlements; a base nobody entitled you to stays a 404."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from tests.integration.accounts import RELAXED_LOGIN_ENV, User, new_user
from tests.integration.conftest import Stack, _start_stack
from tests.integration.knowledge_files import create_base, ingest

FACT = b"The Kestrel migration finished in March; the cobalt ledger holds 4,812 entries.\n"


@pytest.fixture(scope="module")
def market_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                 redis_url: str) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("market"), database_url, redis_url, env={
        **RELAXED_LOGIN_ENV, "EMBEDDING_PROVIDER": "hash"})
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(market_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=market_stack.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def seller(http: httpx.Client, market_stack: Stack) -> User:
    return new_user(http, market_stack.headers)


@pytest.fixture
def buyer(http: httpx.Client, market_stack: Stack) -> User:
    return new_user(http, market_stack.headers)


def _base_with_a_document(http: httpx.Client, owner: User, name: str = "ledger") -> str:
    base_id = str(create_base(http, owner.headers, name=name)["id"])
    ingest(http, base_id, "ledger.txt", FACT, "text/plain", headers=owner.headers)
    return base_id


def _list(http: httpx.Client, owner: User, base_id: str, **fields: object) -> dict[str, object]:
    body = {"knowledge_id": base_id, "title": "Cobalt ledger", "description": "Facts",
            "price": "19.99", "category": "finance", "license_type": "single_use",
            "preview_enabled": True, **fields}
    response = http.post("/v1/marketplace/listings", headers=owner.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _search(http: httpx.Client, who: User, base_id: str) -> httpx.Response:
    return http.post("/v1/knowledge/search", headers=who.headers, json={
        "query": "cobalt ledger entries", "knowledge_ids": [base_id], "mode": "keyword",
        "limit": 3})


def test_an_acquired_base_is_searched_and_asked_like_ones_own(
        http: httpx.Client, seller: User, buyer: User, market_stack: Stack) -> None:
    base_id = _base_with_a_document(http, seller)
    # Before acquiring, the private base does not exist for the buyer.
    assert http.get(f"/v1/knowledge/{base_id}", headers=buyer.headers).status_code == 404
    assert _search(http, buyer, base_id).status_code == 404
    listing = _list(http, seller, base_id)
    assert listing["status"] == "listed" and listing["entitled"] is False
    seen = http.get(f"/v1/marketplace/listings/{listing['id']}", headers=buyer.headers).json()
    assert seen["preview"] and "cobalt ledger" in seen["preview"][0]["content"]
    acquired = http.post(f"/v1/marketplace/listings/{listing['id']}/acquire",
                         headers=buyer.headers)
    assert acquired.status_code == 201, acquired.text
    entitlement = acquired.json()
    assert entitlement["knowledge_id"] == base_id
    assert Decimal(str(entitlement["price"])) == Decimal("19.99")
    # Acquiring again returns the same entitlement.
    again = http.post(f"/v1/marketplace/listings/{listing['id']}/acquire", headers=buyer.headers)
    assert again.status_code == 200 and again.json()["id"] == entitlement["id"]
    mine = http.get("/v1/marketplace/entitlements", headers=buyer.headers).json()["data"]
    assert [e["id"] for e in mine] == [entitlement["id"]]
    # Now the buyer reads, searches and asks it; changing it is still the owner's.
    assert http.get(f"/v1/knowledge/{base_id}", headers=buyer.headers).status_code == 200
    hits = _search(http, buyer, base_id)
    assert hits.status_code == 200 and "cobalt" in hits.json()["results"][0]["content"]
    asked = http.post("/v1/knowledge/ask", headers=buyer.headers, json={
        "question": "How many entries does the cobalt ledger hold?",
        "knowledge_ids": [base_id], "model": "dev/echo"})
    assert asked.status_code == 200, asked.text
    sources = asked.json()["sources"]
    assert sources and {s["knowledge_id"] for s in sources} == {base_id}
    assert http.patch(f"/v1/knowledge/{base_id}", headers=buyer.headers,
                      json={"name": "mine now"}).status_code == 403
    # A third user still finds nothing.
    stranger = new_user(http, market_stack.headers)
    assert http.get(f"/v1/knowledge/{base_id}", headers=stranger.headers).status_code == 404
    assert _search(http, stranger, base_id).status_code == 404


def test_unlisting_keeps_entitlements_and_hides_the_listing(
        http: httpx.Client, seller: User, buyer: User, market_stack: Stack) -> None:
    base_id = _base_with_a_document(http, seller)
    listing = _list(http, seller, base_id)
    http.post(f"/v1/marketplace/listings/{listing['id']}/acquire", headers=buyer.headers)
    # Only the owner unlists (anyone else: 404).
    assert http.delete(f"/v1/marketplace/listings/{listing['id']}",
                       headers=buyer.headers).status_code == 404
    unlisted = http.delete(f"/v1/marketplace/listings/{listing['id']}", headers=seller.headers)
    assert unlisted.status_code == 200 and unlisted.json()["status"] == "unlisted"
    assert _search(http, buyer, base_id).status_code == 200
    latecomer = new_user(http, market_stack.headers)
    assert http.get(f"/v1/marketplace/listings/{listing['id']}",
                    headers=latecomer.headers).status_code == 404
    assert http.post(f"/v1/marketplace/listings/{listing['id']}/acquire",
                     headers=latecomer.headers).status_code == 404
    assert _search(http, latecomer, base_id).status_code == 404
    # The base can be listed again.
    assert http.post("/v1/marketplace/listings", headers=seller.headers, json={
        "knowledge_id": base_id, "title": "again", "category": "finance"}).status_code == 201


def test_ratings_come_from_entitled_users_and_feed_the_listing(
        http: httpx.Client, seller: User, buyer: User, market_stack: Stack) -> None:
    base_id = _base_with_a_document(http, seller)
    listing = _list(http, seller, base_id)
    url = f"/v1/marketplace/listings/{listing['id']}"
    assert http.post(url + "/ratings", headers=buyer.headers,
                     json={"rating": 5}).status_code == 403
    http.post(url + "/acquire", headers=buyer.headers)
    other = new_user(http, market_stack.headers)
    http.post(url + "/acquire", headers=other.headers)
    assert http.post(url + "/ratings", headers=buyer.headers,
                     json={"rating": 5, "review": "great"}).status_code == 200
    assert http.post(url + "/ratings", headers=other.headers,
                     json={"rating": 2}).status_code == 200
    assert http.post(url + "/ratings", headers=other.headers,
                     json={"rating": 3}).status_code == 200  # replaces the 2
    assert http.post(url + "/ratings", headers=other.headers,
                     json={"rating": 9}).status_code == 422
    seen = http.get(url, headers=seller.headers).json()
    assert (seen["rating_average"], seen["rating_count"], seen["acquisitions"]) == (4.0, 2, 2)
    reviews = http.get(url + "/ratings", headers=seller.headers).json()["data"]
    assert sorted(r["rating"] for r in reviews) == [3, 5]


def test_browsing_filters_sorts_and_pages(http: httpx.Client, seller: User,
                                          buyer: User) -> None:
    category = f"cat-{seller.id[:8]}"
    ids = []
    for n, price in enumerate(("5.00", "50.00", "500.00")):
        base_id = str(create_base(http, seller.headers, name=f"b{n}")["id"])
        ids.append(_list(http, seller, base_id, title=f"Atlas volume {n}", price=price,
                         category=category, preview_enabled=False)["id"])

    def browse(**params: object) -> list[str]:
        response = http.get("/v1/marketplace/listings", headers=buyer.headers,
                            params={"category": category, **params})
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()["data"]]

    assert browse(sort="price") == ids
    assert browse(sort="price", order="desc") == ids[::-1]
    assert browse(price_min=10, price_max=100) == [ids[1]]
    assert browse(search="volume 2") == [ids[2]]
    assert browse(sort="price", limit=1, offset=1) == [ids[1]]
    assert browse(rating_min=1) == []
    page = http.get("/v1/marketplace/listings", headers=buyer.headers,
                    params={"category": category, "limit": 2}).json()
    assert page["total"] == 3 and len(page["data"]) == 2
    assert http.get("/v1/marketplace/listings", headers=buyer.headers,
                    params={"sort": "nonsense"}).status_code == 422
    assert http.get("/v1/marketplace/listings", headers=buyer.headers,
                    params={"price_min": "abc"}).status_code == 422
    preview = http.get(f"/v1/marketplace/listings/{ids[0]}", headers=buyer.headers).json()
    assert preview["preview"] is None


def test_only_a_bases_owner_lists_it(http: httpx.Client, seller: User, buyer: User) -> None:
    base_id = str(create_base(http, seller.headers, name="private")["id"])
    stolen = http.post("/v1/marketplace/listings", headers=buyer.headers, json={
        "knowledge_id": base_id, "title": "mine", "category": "x"})
    assert stolen.status_code == 404
    listing = _list(http, seller, base_id)
    twice = http.post("/v1/marketplace/listings", headers=seller.headers, json={
        "knowledge_id": base_id, "title": "twice", "category": "x"})
    assert twice.status_code == 409
    own = http.post(f"/v1/marketplace/listings/{listing['id']}/acquire",
                    headers=seller.headers)
    assert own.status_code == 409
    assert http.get("/v1/marketplace/listings/not-an-id",
                    headers=buyer.headers).status_code == 404
