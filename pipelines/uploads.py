"""Direct uploads' Switchyard URLs: signed, expiring, single-use.

The token is an HMAC of the upload id and its expiry under the deployment's secret key, so
any API replica can check it without shared state; expiry and single use are then the
upload row's (pipelines/db/files.py `receive_upload`: one conditional UPDATE claims it).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime


def _message(upload_id: str, expires_at: datetime) -> bytes:
    return f"upload:{upload_id}:{int(expires_at.timestamp())}".encode()


def sign_upload(secret_key: str, upload_id: str, expires_at: datetime) -> str:
    """The token a client sends back with the file (the `token` form field)."""
    return hmac.new(secret_key.encode(), _message(upload_id, expires_at),
                    hashlib.sha256).hexdigest()


def token_matches(secret_key: str, upload_id: str, expires_at: datetime, token: str) -> bool:
    """Constant-time check of a presented token."""
    return hmac.compare_digest(sign_upload(secret_key, upload_id, expires_at).encode(),
                               token.encode())
