"""SCRAM-SHA-256 server side (RFC 5802 / RFC 7677), as MongoDB runs it for `saslStart`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata
from dataclasses import dataclass

ITERATIONS = 15000


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep, enough for passwords (mapping, NFKC, prohibited output)."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    if any(stringprep.in_table_c21_c22(c) or stringprep.in_table_c9(c) for c in normal):
        raise ValueError("password holds prohibited characters")
    return normal


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


@dataclass(frozen=True)
class Credential:
    """What the server keeps of a password: salt, iterations, StoredKey, ServerKey."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(cls, password: str, iterations: int = ITERATIONS) -> Credential:
        salt = os.urandom(28)
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
        return cls(
            salt,
            iterations,
            hashlib.sha256(_hmac(salted, b"Client Key")).digest(),
            _hmac(salted, b"Server Key"),
        )


def _attributes(message: bytes) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.decode().split(",") if "=" in part)


class ScramConversation:
    """One client's exchange: first message -> server-first, final -> server signature."""

    def __init__(self, client_first: bytes, lookup) -> None:  # type: ignore[no-untyped-def]
        if not client_first.startswith(b"n,,"):
            raise ValueError("channel binding is not supported")
        self.client_first_bare = client_first[3:]
        attrs = _attributes(self.client_first_bare)
        self.user = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
        self.credential: Credential | None = lookup(self.user)
        self.nonce = attrs["r"] + base64.b64encode(os.urandom(24)).decode()
        cred = self.credential or Credential.from_password(os.urandom(8).hex(), 4096)
        self.server_first = (
            f"r={self.nonce},s={base64.b64encode(cred.salt).decode()},i={cred.iterations}"
        ).encode()

    def finish(self, client_final: bytes) -> bytes | None:
        """The server-final message, or None when the proof is wrong."""
        without_proof, _, proof_part = client_final.rpartition(b",p=")
        attrs = _attributes(without_proof)
        if self.credential is None or attrs.get("r") != self.nonce:
            return None
        auth_message = b",".join([self.client_first_bare, self.server_first, without_proof])
        signature = _hmac(self.credential.stored_key, auth_message)
        proof = base64.b64decode(proof_part)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.credential.stored_key):
            return None
        server_signature = _hmac(self.credential.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)
