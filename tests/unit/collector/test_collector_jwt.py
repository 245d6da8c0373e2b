"""HS256 tokens of the collector."""

from __future__ import annotations

import base64
import json

import pytest

from agentops_async.collector._jwt import ExpiredToken, InvalidToken, JwtSigner

SECRET = b"s" * 32


def test_issued_token_verifies_with_its_claims() -> None:
    signer = JwtSigner(SECRET, expiry=60)
    claims = signer.verify(signer.issue("session-1", "project-1", now=1000.0), now=1030.0)
    assert (claims.session_id, claims.project_id) == ("session-1", "project-1")
    assert claims.exp == pytest.approx(1060.0)


def test_token_is_a_standard_hs256_jwt() -> None:
    import hashlib
    import hmac

    token = JwtSigner(SECRET, expiry=60).issue("s", "p", now=0)
    header, payload, signature = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(base64.urlsafe_b64decode(payload + "=="))["session_id"] == "s"
    expected = hmac.new(SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=") == expected


def test_expired_token_raises_expired() -> None:
    signer = JwtSigner(SECRET, expiry=1)
    token = signer.issue("s", "p", now=1000.0)
    with pytest.raises(ExpiredToken):
        signer.verify(token, now=1001.0)


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "é.b.c", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.x"],
)
def test_garbage_is_invalid(token: str) -> None:
    with pytest.raises(InvalidToken):
        JwtSigner(SECRET, expiry=60).verify(token)


def test_token_of_another_secret_or_tampered_is_invalid() -> None:
    token = JwtSigner(b"other" * 8, expiry=60).issue("s", "p")
    with pytest.raises(InvalidToken):
        JwtSigner(SECRET, expiry=60).verify(token)
    signer = JwtSigner(SECRET, expiry=60)
    header, _payload, signature = signer.issue("s", "p").split(".")
    forged = base64.urlsafe_b64encode(
        json.dumps({"session_id": "x", "project_id": "p", "iat": 0, "exp": 9e12}).encode()
    ).rstrip(b"=")
    with pytest.raises(InvalidToken):
        signer.verify(f"{header}.{forged.decode()}.{signature}")
    assert "s" * 32 not in repr(signer)
