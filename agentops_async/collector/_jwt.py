"""HS256 JSON Web Tokens signed by the collector (RFC 7519, just the part we need).

A session token names one session of one project, a project token (no session claim) only the
project. Tokens expire; an expired one is answered with ``401 {"message": "Expired Token"}`` so
clients exercise re-authorisation for real.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

import msgspec

__all__ = ["Claims", "ExpiredToken", "InvalidToken", "JwtSigner"]

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


class Claims(msgspec.Struct, frozen=True):
    """What a collector token says: which session (None: a project token) of which project, and
    until when."""

    session_id: str | None
    project_id: str
    iat: float
    exp: float


_claims_encoder = msgspec.json.Encoder()
_claims_decoder = msgspec.json.Decoder(Claims)


class InvalidToken(Exception):
    """The token is malformed or its signature does not match."""


class ExpiredToken(InvalidToken):
    """The token was valid but its expiry has passed."""


def _b64decode(part: bytes) -> bytes:
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


class JwtSigner:
    """Signs and verifies HS256 tokens with one secret.

    Args:
        secret: The HMAC key (at least 32 random bytes).
        expiry: Lifetime of a new token in seconds.
    """

    def __init__(self, secret: bytes, expiry: float) -> None:
        self._secret = secret
        self.expiry = expiry

    def __repr__(self) -> str:
        return f"JwtSigner(expiry={self.expiry!r})"

    def derive_key(self, purpose: bytes) -> bytes:
        """A key for another use of the same secret (e.g. read cursors), apart from the tokens'."""
        return hmac.new(self._secret, b"agentops-async key: " + purpose, hashlib.sha256).digest()

    def _sign(self, signing_input: bytes) -> bytes:
        digest = hmac.new(self._secret, signing_input, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def issue(
        self,
        session_id: str | None,
        project_id: str,
        now: float | None = None,
        expiry: float | None = None,
    ) -> str:
        """A new token for ``session_id`` of ``project_id`` (None: a project token), valid for
        ``expiry`` seconds (default: the signer's ``expiry``)."""
        issued = time.time() if now is None else now
        lifetime = self.expiry if expiry is None else expiry
        claims = Claims(session_id, project_id, round(issued, 3), round(issued + lifetime, 3))
        payload = base64.urlsafe_b64encode(_claims_encoder.encode(claims)).rstrip(b"=")
        signing_input = _HEADER + b"." + payload
        return (signing_input + b"." + self._sign(signing_input)).decode("ascii")

    def verify(self, token: str, now: float | None = None) -> Claims:
        """The claims of a valid, unexpired token.

        Raises:
            ExpiredToken: The signature is good but the token has expired.
            InvalidToken: Anything else is wrong with it.
        """
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidToken("token is not ASCII") from None
        header, dot, rest = raw.partition(b".")
        payload, dot2, signature = rest.partition(b".")
        if not (dot and dot2) or header != _HEADER:
            raise InvalidToken("not an HS256 token of this collector")
        if not hmac.compare_digest(signature, self._sign(header + b"." + payload)):
            raise InvalidToken("bad signature")
        try:
            claims = _claims_decoder.decode(_b64decode(payload))
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise InvalidToken("bad payload") from None
        if (time.time() if now is None else now) >= claims.exp:
            raise ExpiredToken("token expired")
        return claims
