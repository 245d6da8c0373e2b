"""The dashboard's sign-in pieces alone: the cookie codec, the failed-sign-in limiter, and where
a sign-in may send the browser next."""

from __future__ import annotations

import pytest

from agentops_async.collector._dashboard import SignInCookie, SignInLimiter, safe_next

PROJECT = "0b0c0d0e-0000-4000-8000-000000000001"
KEY_HASH = "ab" * 32


def test_a_cookie_reads_back_until_it_expires_and_not_after() -> None:
    cookies = SignInCookie(b"k" * 32)
    value = cookies.issue(PROJECT, KEY_HASH, lifetime=60, now=1000.0)
    assert cookies.read(value, now=1000.0) == (PROJECT, KEY_HASH)
    assert cookies.read(value, now=1059.9) == (PROJECT, KEY_HASH)
    assert cookies.read(value, now=1060.0) is None


def test_a_cookie_of_another_key_or_altered_is_refused() -> None:
    value = SignInCookie(b"k" * 32).issue(PROJECT, KEY_HASH, lifetime=60, now=1000.0)
    assert SignInCookie(b"x" * 32).read(value, now=1000.0) is None
    payload, mac = value.split(".")
    for altered in (payload + "A." + mac, payload + "." + mac[:-1], payload, "", "é.é", "..."):
        assert SignInCookie(b"k" * 32).read(altered, now=1000.0) is None
    assert "k" * 32 not in repr(SignInCookie(b"k" * 32))


def test_the_limiter_allows_a_burst_then_one_attempt_per_refill_per_address() -> None:
    now = [0.0]
    limiter = SignInLimiter(per_minute=3, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") == 0
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 20  # one attempt back every 60 / 3 seconds
    assert limiter.retry_after("10.0.0.2") == 0  # per address
    now[0] = 19.0
    assert limiter.retry_after("10.0.0.1") == 1
    now[0] = 20.0
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 20


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/sessions/1?x=2", "/sessions/1?x=2"),
        ("/overview", "/overview"),
        (None, "/sessions"),
        ("", "/sessions"),
        ("//evil.example/x", "/sessions"),
        ("/\\evil.example", "/sessions"),
        ("https://evil.example/", "/sessions"),
        ("/x\r\nSet-Cookie: a=b", "/sessions"),
    ],
)
def test_after_sign_in_the_browser_goes_only_to_a_path_of_this_site(
    value: str | None, expected: str
) -> None:
    assert safe_next(value) == expected
