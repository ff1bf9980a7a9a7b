"""A software passkey: an ES256 authenticator built on `cryptography`, answering
navigator.credentials.create() and .get() options the way a browser plus a platform
authenticator would (attestation "none"), so tests drive real WebAuthn ceremonies."""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

_UP, _UV, _AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SoftAuthenticator:
    """One passkey (key pair and credential id) with its signature counter."""

    rp_id: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    sign_count: int = 0

    @property
    def id(self) -> str:
        return b64url(self.credential_id)

    def clone(self) -> SoftAuthenticator:
        """The same key and id with the counter as it is now: a cloned authenticator."""
        return SoftAuthenticator(self.rp_id, self.key, self.credential_id, self.sign_count)

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})

    def _client_data(self, kind: str, challenge: str, origin: str) -> bytes:
        return orjson.dumps({"type": kind, "challenge": challenge, "origin": origin,
                             "crossOrigin": False})

    def create(self, options: dict[str, Any], origin: str) -> dict[str, Any]:
        """The PublicKeyCredential JSON for registration options."""
        rp_id = options["rp"]["id"]
        self.sign_count += 1
        attested = (bytes(16) + struct.pack(">H", len(self.credential_id))
                    + self.credential_id + self._cose_key())
        auth_data = (hashlib.sha256(rp_id.encode()).digest() + bytes([_UP | _UV | _AT])
                     + struct.pack(">I", self.sign_count) + attested)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return {"id": self.id, "rawId": self.id, "type": "public-key",
                "response": {"clientDataJSON": b64url(client_data),
                             "attestationObject": b64url(attestation),
                             "transports": ["internal"]},
                "clientExtensionResults": {}, "authenticatorAttachment": "platform"}

    def get(self, options: dict[str, Any], origin: str, *,
            advance: bool = True) -> dict[str, Any]:
        """The PublicKeyCredential JSON for authentication options (signed assertion)."""
        if advance:
            self.sign_count += 1
        auth_data = (hashlib.sha256(options["rpId"].encode()).digest()
                     + bytes([_UP | _UV]) + struct.pack(">I", self.sign_count))
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        return {"id": self.id, "rawId": self.id, "type": "public-key",
                "response": {"clientDataJSON": b64url(client_data),
                             "authenticatorData": b64url(auth_data),
                             "signature": b64url(signature), "userHandle": None},
                "clientExtensionResults": {}, "authenticatorAttachment": "platform"}
