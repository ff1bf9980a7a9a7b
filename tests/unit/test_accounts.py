"""pipelines/accounts.py: password hashing, API key format, session tokens."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from pipelines import accounts

SECRET = "test-secret-key-of-a-reasonable-length-0123456789"


def test_a_password_verifies_against_its_hash_and_nothing_else() -> None:
    hashed = accounts.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert accounts.verify_password(hashed, "correct horse battery")
    assert not accounts.verify_password(hashed, "correct horse batterY")
    assert not accounts.password_needs_rehash(hashed)


def test_the_same_password_hashes_differently_each_time() -> None:
    assert accounts.hash_password("same password") != accounts.hash_password("same password")


def test_a_missing_or_garbled_hash_never_verifies() -> None:
    assert not accounts.verify_password(None, "anything")
    assert not accounts.verify_password("not-a-hash", "anything")


def test_api_keys_are_sy_prefixed_random_and_stored_only_as_sha256() -> None:
    first, second = accounts.new_api_key(), accounts.new_api_key()
    assert re.fullmatch(r"sy-[A-Za-z0-9_-]{43}", first.key)
    assert first.key != second.key
    assert first.prefix == first.key[: accounts.SHOWN_KEY_CHARS]
    assert re.fullmatch(r"[0-9a-f]{64}", first.key_hash)
    assert first.key_hash == accounts.key_digest(first.key)
    assert first.key not in first.key_hash
    assert accounts.looks_like_api_key(first.key)
    assert not accounts.looks_like_api_key("eyJhbGciOiJIUzI1NiJ9.e30.x")


def test_emails_are_normalized_to_lowercase_without_spaces() -> None:
    assert accounts.normalize_email("  Ada@Example.COM ") == "ada@example.com"


def test_same_secret_compares_whole_values() -> None:
    assert accounts.same_secret("sy-abc", "sy-abc")
    assert not accounts.same_secret("sy-abc", "sy-abd")
    assert not accounts.same_secret("sy-ab", "sy-abc")


def test_an_issued_token_decodes_to_its_user_and_session_id() -> None:
    issued = accounts.issue_token("user-1", SECRET, ttl_s=60)
    claims = accounts.decode_token(issued.token, SECRET)
    assert claims["sub"] == "user-1"
    assert claims["jti"] == issued.jti
    assert issued.expires_at > datetime.now(UTC)


def test_each_token_gets_its_own_session_id() -> None:
    assert (accounts.issue_token("u", SECRET, 60).jti
            != accounts.issue_token("u", SECRET, 60).jti)


def test_an_expired_token_is_rejected() -> None:
    issued = accounts.issue_token("user-1", SECRET, ttl_s=60,
                                  now=datetime.now(UTC) - timedelta(minutes=5))
    with pytest.raises(accounts.InvalidToken):
        accounts.decode_token(issued.token, SECRET)


def test_a_token_signed_with_another_key_is_rejected() -> None:
    issued = accounts.issue_token("user-1", "another-secret-key-0123456789abcdef", ttl_s=60)
    with pytest.raises(accounts.InvalidToken):
        accounts.decode_token(issued.token, SECRET)


def test_an_unsigned_or_tampered_token_is_rejected() -> None:
    issued = accounts.issue_token("user-1", SECRET, ttl_s=60)
    claims = accounts.decode_token(issued.token, SECRET)
    unsigned = jwt.encode({**claims, "sub": "admin"}, key=None, algorithm="none")
    with pytest.raises(accounts.InvalidToken):
        accounts.decode_token(unsigned, SECRET)
    head, body, signature = issued.token.split(".")
    with pytest.raises(accounts.InvalidToken):
        accounts.decode_token(f"{head}.{body}x.{signature}", SECRET)


def test_a_token_without_a_session_id_is_rejected() -> None:
    token = jwt.encode({"sub": "u", "iss": "switchyard", "iat": 0, "exp": 2**40}, SECRET,
                       algorithm="HS256")
    with pytest.raises(accounts.InvalidToken):
        accounts.decode_token(token, SECRET)


def test_without_a_configured_secret_the_development_key_is_used_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configured = "a-configured-secret-key-of-32-bytes-or-more"
    assert accounts.secret_key_or_dev(configured) == configured
    with pytest.raises(ValueError):
        accounts.secret_key_or_dev("too-short")
    with caplog.at_level("WARNING", logger="switchyard.accounts"):
        assert accounts.secret_key_or_dev(None) == accounts.DEV_SECRET_KEY
    assert "SWITCHYARD_SECRET_KEY" in caplog.text
