"""The dashboard over HTTP (no browser): the sign-in cookie, its expiry and revocation, the
sign-in rate limit, the Origin check, the security headers, static caching, and that every page
and JSON call sees only the signed-in project."""

from __future__ import annotations

import html
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from _servers import CollectorHandle

from agentops_async.collector import _auth
from agentops_async.collector._dashboard import CONTENT_SECURITY_POLICY, COOKIE_NAME
from agentops_async.collector._storage import open_storage

pytestmark = pytest.mark.asyncio

WRONG_KEY = "That key is not a valid API key of any project here."


class Browser:
    """A tiny cookie-keeping HTTP client (aiohttp's jar refuses cookies of IP hosts)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookie: str | None = None
        self.set_cookie: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        cookie: str | None = None,
    ) -> tuple[int, Any, str]:
        all_headers = dict(headers or {})
        value = cookie if cookie is not None else self.cookie
        if value:
            all_headers["Cookie"] = f"{COOKIE_NAME}={value}"
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, self.url + path, data=form, headers=all_headers, allow_redirects=False
            ) as response,
        ):
            text = await response.text()
            set_cookie = response.headers.get("Set-Cookie")
            if set_cookie is not None and set_cookie.startswith(COOKIE_NAME + "="):
                self.set_cookie = set_cookie
                self.cookie = set_cookie.split(";", 1)[0].split("=", 1)[1].strip('"') or None
            return response.status, response.headers.copy(), text

    async def sign_in(self, api_key: str, **extra: str) -> tuple[int, Any, str]:
        return await self.request(
            "POST",
            "/signin",
            form={"key": api_key, **extra},
            headers={"Origin": self.url},
        )


async def _revoke(collector: CollectorHandle, api_key: str) -> None:
    storage = open_storage(collector.database)
    await storage.open()
    try:
        assert await storage.revoke_key(_auth.hash_key(api_key)) is not None
    finally:
        await storage.close()


async def test_sign_in_sets_a_signed_http_only_same_site_strict_cookie_and_no_key_anywhere(
    collector: CollectorHandle,
) -> None:
    browser = Browser(collector.url)
    status, headers, _ = await browser.sign_in(collector.api_key, next="/sessions?state=failed")
    assert status == 303
    assert headers["Location"] == "/sessions?state=failed"
    cookie = browser.set_cookie
    assert cookie is not None
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path", "max-age", "samesite"} <= attributes
    assert "SameSite=Strict" in cookie
    assert "Max-Age=43200" in cookie
    assert collector.api_key not in cookie
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    status, _, page = await browser.request("GET", "/sessions")
    assert status == 200
    assert "Sessions" in page
    assert collector.api_key not in page


async def test_a_tampered_or_missing_cookie_is_not_signed_in(collector: CollectorHandle) -> None:
    browser = Browser(collector.url)
    await browser.sign_in(collector.api_key)
    assert browser.cookie is not None
    good = browser.cookie
    payload, mac = good.split(".")
    # another project's id in a payload signed by no one
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + mac
    for cookie in (forged, good[:-3] + "xyz", "garbage", "a.b"):
        status, headers, _ = await browser.request("GET", "/sessions", cookie=cookie)
        assert status == 303
        assert headers["Location"] == "/signin?next=/sessions"
        status, _, body = await browser.request(
            "GET", "/ui/api/sessions/status?id=" + str(uuid.uuid4()), cookie=cookie
        )
        assert status == 401
        assert "sign in again" in body
    status, _, _ = await browser.request("GET", "/sessions", cookie=good)
    assert status == 200


@pytest.mark.parametrize("collector_backend", ["sqlite"])
async def test_a_sign_in_expires(
    collector_factory: Callable[..., CollectorHandle], collector_backend: str
) -> None:
    collector = collector_factory(collector_backend, extra_args=("--dashboard-signin-expiry", "1"))
    browser = Browser(collector.url)
    await browser.sign_in(collector.api_key)
    assert browser.set_cookie is not None
    assert "Max-Age=1" in browser.set_cookie
    status, _, _ = await browser.request("GET", "/ui/api/sessions/status")
    assert status == 200

    async def expired() -> bool:
        return (await browser.request("GET", "/ui/api/sessions/status"))[0] == 401

    await _wait_async(expired, 10.0, "the sign-in to expire")


async def _wait_async(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_a_revoked_keys_sign_in_stops_working_within_the_key_cache_time(
    collector: CollectorHandle,
) -> None:
    key = collector.new_api_key("to-revoke")
    browser = Browser(collector.url)
    await browser.sign_in(key)
    assert (await browser.request("GET", "/sessions"))[0] == 200
    await _revoke(collector, key)

    async def signed_out() -> bool:
        return (await browser.request("GET", "/ui/api/sessions/status"))[0] == 401

    await _wait_async(signed_out, 5.0 + 5.0, "the revoked key's sign-in to stop working")
    status, headers, _ = await browser.request("GET", "/sessions")
    assert status == 303
    assert headers["Location"].startswith("/signin")


@pytest.mark.parametrize("collector_backend", ["sqlite"])
async def test_failed_sign_ins_are_rate_limited_per_address_with_one_message(
    collector_factory: Callable[..., CollectorHandle], collector_backend: str
) -> None:
    collector = collector_factory(
        collector_backend, extra_args=("--signin-attempts-per-minute", "3")
    )
    browser = Browser(collector.url)
    for wrong in (str(uuid.uuid4()), "not-a-key", "kéy"):
        status, _, page = await browser.sign_in(wrong)
        assert status == 401
        assert WRONG_KEY in page
        assert wrong not in page
        assert browser.cookie is None
    status, headers, page = await browser.sign_in(collector.api_key)  # even the right one
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 20
    assert "Too many sign-in attempts" in page
    assert browser.cookie is None


async def test_a_sign_in_posted_from_another_site_is_refused(collector: CollectorHandle) -> None:
    browser = Browser(collector.url)
    for header in (
        {"Origin": "http://evil.example"},
        {"Referer": "http://evil.example/x"},
        {"Origin": "null"},
        {"Origin": collector.url + ".evil.example"},
    ):
        status, _, page = await browser.request(
            "POST", "/signin", form={"key": collector.api_key}, headers=header
        )
        assert status == 403
        assert "cross-site request refused" in page
        assert browser.cookie is None
    # the same host through a proxy that ends TLS: the browser's origin says https
    status, _, _ = await browser.request(
        "POST",
        "/signin",
        form={"key": collector.api_key},
        headers={"Origin": collector.url.replace("http://", "https://")},
    )
    assert status == 303
    status, _, _ = await browser.request(
        "POST", "/signout", headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    status, _, _ = await browser.request("POST", "/signout", headers={"Origin": collector.url})
    assert status == 303
    assert browser.set_cookie is not None
    assert browser.cookie is None  # deleted
    assert (await browser.request("GET", "/sessions"))[0] == 303


async def test_every_dashboard_answer_carries_the_content_security_policy(
    collector: CollectorHandle,
) -> None:
    browser = Browser(collector.url)
    answers = [
        await browser.request("GET", "/"),
        await browser.request("GET", "/signin"),
        await browser.request("GET", "/sessions"),
        await browser.request("GET", "/static/dashboard.css"),
        await browser.request("GET", "/ui/api/sessions/status"),
        await browser.sign_in("wrong"),
    ]
    await browser.sign_in(collector.api_key)
    answers += [
        await browser.request("GET", "/sessions"),
        await browser.request("GET", f"/sessions/{uuid.uuid4()}"),
        await browser.request("GET", f"/ui/api/sessions/{uuid.uuid4()}/events"),
    ]
    assert [status for status, _, _ in answers] == [302, 200, 303, 200, 401, 401, 200, 404, 404]
    for _, headers, _ in answers:
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert headers["X-Content-Type-Options"] == "nosniff"
    page = answers[6][2]
    assert "<script>" not in page  # only <script type="module" src=...>: no inline script
    assert re.findall(r"<script[^>]*>", page) == [
        f'<script type="module" src="{src}">' for src in re.findall(r'src="(/static/[^"]+)"', page)
    ]


async def test_static_files_are_cached_for_good_when_versioned_and_revalidated_otherwise(
    collector: CollectorHandle,
) -> None:
    browser = Browser(collector.url)
    _, _, page = await browser.request("GET", "/signin")
    (versioned,) = re.findall(r'href="(/static/dashboard\.css\?v=[0-9a-f]+)"', page)
    status, headers, body = await browser.request("GET", versioned)
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Content-Type"].startswith("text/css")
    assert "--accent" in body
    status, headers, _ = await browser.request("GET", "/static/dashboard.css")
    assert headers["Cache-Control"] == "no-cache"
    status, _, _ = await browser.request(
        "GET", "/static/dashboard.css", headers={"If-None-Match": headers["ETag"]}
    )
    assert status == 304
    assert (await browser.request("GET", "/static/..%2F__init__.py"))[0] == 404
    assert (await browser.request("GET", "/static/nope.js"))[0] == 404


async def test_pages_and_json_calls_see_only_the_signed_in_project(
    collector: CollectorHandle,
) -> None:
    other_key = collector.new_api_key("other")
    created = [await collector.v2_create_session(tags=["mine"]) for _ in range(2)]
    mine = [session_id for session_id, _ in created]
    agent = await collector.v2_post(
        "create_agent", {"id": str(uuid.uuid4()), "name": "planner <b>bot</b>"}, jwt=created[0][1]
    )
    assert agent.status == 200
    theirs, their_jwt = await collector.v2_create_session(api_key=other_key, tags=["theirs"])
    await collector.v2_post(
        "create_events",
        {"events": [{"id": str(uuid.uuid4()), "event_type": "actions", "session_id": theirs,
                     "init_timestamp": "2026-01-01T00:00:00Z"}]},
        jwt=their_jwt,
    )  # fmt: skip
    browser = Browser(collector.url)
    await browser.sign_in(collector.api_key)

    status, _, page = await browser.request("GET", "/sessions")
    assert status == 200
    assert all(f'data-id="{s}"' in page for s in mine)
    assert theirs not in page
    status, _, page = await browser.request("GET", "/sessions?tag=theirs")
    assert 'data-id="' not in page

    query = "&".join(f"id={s}" for s in [*mine, theirs])
    status, _, body = await browser.request("GET", f"/ui/api/sessions/status?{query}")
    assert status == 200
    import json

    assert sorted(s["id"] for s in json.loads(body)["sessions"]) == sorted(mine)
    assert (await browser.request("GET", f"/sessions/{theirs}"))[0] == 404
    assert (await browser.request("GET", f"/ui/api/sessions/{theirs}/events"))[0] == 404
    status, headers, _ = await browser.request("GET", f"/sessions?find={theirs}")
    assert status == 200  # not found here: no redirect to it
    status, headers, _ = await browser.request("GET", f"/sessions?find={mine[0]}")
    assert (status, headers["Location"]) == (302, f"/sessions/{mine[0]}")
    status, _, page = await browser.request("GET", f"/sessions/{mine[0]}")
    assert status == 200
    assert mine[0] in page
    assert "planner &lt;b&gt;bot&lt;/b&gt;" in page  # its agent, escaped
    assert "<b>bot</b>" not in page


async def test_live_rows_answer_each_own_session_once_in_the_order_asked(
    collector: CollectorHandle,
) -> None:
    """The list's live update reads all its sessions in one query; the answer keeps the order of
    the ids, once each, and leaves out unknown ids and other projects' sessions."""
    other_key = collector.new_api_key("other")
    mine = [(await collector.v2_create_session())[0] for _ in range(3)]
    theirs, _ = await collector.v2_create_session(api_key=other_key)
    browser = Browser(collector.url)
    await browser.sign_in(collector.api_key)
    asked = [mine[2], str(uuid.uuid4()), mine[0].upper(), theirs, mine[2], mine[1]]
    query = "&".join(f"id={s}" for s in asked)
    status, _, body = await browser.request("GET", f"/ui/api/sessions/status?{query}")
    assert status == 200
    import json

    rows = json.loads(body)["sessions"]
    assert [s["id"] for s in rows] == [mine[2], mine[0], mine[1]]
    assert {s["state"] for s in rows} == {"RUNNING"}
    assert {s["events"] for s in rows} == {0}
    status, _, body = await browser.request("GET", "/ui/api/sessions/status?id=nope")
    assert status == 400
    assert "id" in body


async def test_the_session_url_of_create_session_opens_the_session_page_after_sign_in(
    collector: CollectorHandle,
) -> None:
    session_id = str(uuid.uuid4())
    answer = await collector.v2_post(
        "create_session",
        {"session": {"session_id": session_id, "tags": []}},
        api_key=collector.api_key,
    )
    url = answer.body["session_url"]
    assert url == f"{collector.url}/sessions/{session_id}"
    browser = Browser(collector.url)
    path = url.removeprefix(collector.url)
    status, headers, _ = await browser.request("GET", path)
    assert (status, headers["Location"]) == (303, f"/signin?next={path}")
    _, _, form = await browser.request("GET", headers["Location"])
    assert f'name="next" value="{path}"' in form
    status, headers, _ = await browser.sign_in(collector.api_key, next=path)
    assert (status, headers["Location"]) == (303, path)
    status, _, page = await browser.request("GET", path)
    assert status == 200
    assert 'id="waterfall"' in page
    # agentops 0.3 prints https://app.agentops.ai/drilldown?session_id=<id>: on this host it opens
    # the same page
    status, headers, _ = await browser.request("GET", f"/drilldown?session_id={session_id}")
    assert (status, headers["Location"]) == (302, path)
    assert (await browser.request("GET", "/drilldown?session_id=nope"))[0] == 400
    # a deep link with several filters comes back whole
    listing = "/sessions?state=failed&tag=a b"
    status, headers, _ = await browser.request("GET", listing, cookie="")
    _, _, form = await browser.request("GET", headers["Location"], cookie="")
    (kept,) = re.findall(r'name="next" value="([^"]*)"', form)
    path_part, _, query = html.unescape(kept).partition("?")
    assert (path_part, parse_qs(query)) == ("/sessions", {"state": ["failed"], "tag": ["a b"]})
    # never to another site
    status, headers, _ = await browser.sign_in(collector.api_key, next="//evil.example/x")
    assert headers["Location"] == "/sessions"


async def test_the_events_call_pages_with_a_cursor_and_prices_llm_events(
    collector: CollectorHandle,
) -> None:
    session_id, jwt = await collector.v2_create_session()
    llm = {"id": str(uuid.uuid4()), "event_type": "llms", "session_id": session_id,
           "init_timestamp": "2026-01-01T00:00:00Z", "model": "gpt-4o-mini",
           "prompt_tokens": 1000, "completion_tokens": 500}  # fmt: skip
    events = [llm] + [
        {"id": str(uuid.uuid4()), "event_type": "tools", "session_id": session_id,
         "init_timestamp": "2026-01-01T00:00:01Z", "name": f"t{i}"}
        for i in range(4)
    ]  # fmt: skip
    assert (await collector.v2_post("create_events", {"events": events}, jwt=jwt)).status == 200
    browser = Browser(collector.url)
    await browser.sign_in(collector.api_key)
    import json

    seen: list[str] = []
    costs: dict[str, str] = {}
    cursor = ""
    while True:
        path = f"/ui/api/sessions/{session_id}/events?limit=2" + (
            f"&cursor={cursor}" if cursor else ""
        )
        status, headers, body = await browser.request("GET", path)
        assert status == 200
        assert headers["Cache-Control"] == "no-store"
        page = json.loads(body)
        assert len(page["events"]) <= 2
        seen += [e["id"] for e in page["events"]]
        costs.update(page["costs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in events]
    assert costs == {llm["id"]: "0.00045"}
    status, _, body = await browser.request(
        "GET", f"/ui/api/sessions/{session_id}/events?cursor=forged"
    )
    assert status == 400
    assert "cursor" in json.loads(body)["message"]


async def test_the_sessions_list_pages_newest_first_with_a_keyset_cursor(
    collector: CollectorHandle,
) -> None:
    created = [(await collector.v2_create_session(tags=["paged"]))[0] for _ in range(53)]
    browser = Browser(collector.url)
    await browser.sign_in(collector.api_key)
    _, _, first = await browser.request("GET", "/sessions?tag=paged")
    ids = re.findall(r'<tr data-id="([^"]+)"', first)
    assert ids == created[::-1][:50]
    (older,) = re.findall(r'id="page-next" href="([^"]+)"|href="([^"]+)" id="page-next"', first)[
        0:1
    ]
    next_url = next(u for u in older if u).replace("&amp;", "&")
    assert "tag=paged" in next_url
    assert "cursor=" in next_url
    _, _, second = await browser.request("GET", next_url)
    assert re.findall(r'<tr data-id="([^"]+)"', second) == created[::-1][50:]
    assert 'id="page-next"' not in second


@pytest.mark.parametrize("collector_backend", ["sqlite"])
async def test_serve_prints_the_dashboard_url(
    collector_factory: Callable[..., CollectorHandle], collector_backend: str
) -> None:
    collector = collector_factory(collector_backend)
    log = collector.process.log_path

    async def printed() -> bool:
        return f"dashboard: {collector.url}/ " in log.read_text()

    await _wait_async(printed, 10.0, "the dashboard URL in the serve output")
    assert (await Browser(collector.url).request("GET", "/"))[1]["Location"] == "/sessions"


async def test_the_session_page_shows_the_sessions_uploaded_logs_as_text(
    collector: CollectorHandle,
) -> None:
    token = await collector.request(
        "POST", "/v3/auth/token", json_body={"api_key": collector.api_key}
    )
    trace_id = os.urandom(16).hex()
    session_id = str(uuid.UUID(hex=trace_id))
    bearer = {"Authorization": f"Bearer {token.body['token']}"}
    log = "step 1 ok\n<script>window.__xss = 1</script> done"
    upload = await collector.request(
        "POST", "/v4/logs/upload/", json_body={"body": log},
        headers={**bearer, "Trace-Id": str(int(trace_id, 16))},
    )  # fmt: skip
    assert upload.status == 200, upload.body
    start = time.time_ns()
    span = {"traceId": trace_id, "spanId": "00000000000000e1", "name": "s.session",
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 10**9)}  # fmt: skip
    traces = await collector.request(
        "POST", "/v1/traces", headers=bearer,
        json_body={"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]},
    )  # fmt: skip
    assert traces.status == 200
    browser = Browser(collector.url)
    await browser.sign_in(collector.api_key)
    status, _, page = await browser.request("GET", f"/sessions/{session_id}")
    assert status == 200
    assert "Uploaded logs" in page
    assert "step 1 ok\n&lt;script&gt;window.__xss = 1&lt;/script&gt; done" in page
    assert "<script>window" not in page
