"""Sealing upstream API keys at rest (Fernet: AES-CBC + HMAC) under a deployment secret.

The registry stores only sealed keys, so a database dump or a stray `SELECT *` does not
hand out provider credentials; anyone holding the deployment secret can still open them,
which the workers must do to call the upstream.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

_CONTEXT = b"switchyard/model-api-keys/v1:"


class SecretBox:
    """Seal and open short secrets with a key derived from `secret`."""

    def __init__(self, secret: str, context: bytes = _CONTEXT) -> None:
        digest = hashlib.sha256(context + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, plain: str) -> str:
        """An opaque token for `plain`, safe to store."""
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, token: str) -> str | None:
        """The secret sealed in `token`, or None if it was sealed under another secret."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            return None


# Without SWITCHYARD_SECRET_KEY keys are still not stored in plain text, but anyone with
# this source can open them: production deployments set the secret.
_DEV_SECRET = "switchyard-development-secret-for-model-keys"


def secret_box(secret: str | None, context: bytes = _CONTEXT) -> SecretBox:
    """The box for the deployment's secret (or the development one when unset); another
    `context` (e.g. WEBHOOK_SECRETS) derives another key, so boxes of different uses never
    open each other's tokens."""
    return SecretBox(secret or _DEV_SECRET, context)


# Webhook subscriptions' signing secrets (pipelines/db/webhooks.py).
WEBHOOK_SECRETS = b"switchyard/webhook-secrets/v1:"
