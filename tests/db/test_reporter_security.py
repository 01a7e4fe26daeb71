"""Issue 12 against the reporter app (SQLite and PostgreSQL): the tracking secret and the owner's
view, the public Open311 feed, signed rider tokens and the new-riders limit, per-caller
idempotency, bad input answered 4xx, '+1' checks, bodies read after auth and capped, revoked staff
tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from schemas.events import CaseOpened, CaseTransitioned, StaffTokensRevoked
from schemas.reference import Place
from services.reporter.config import RateLimits
from services.reporter.context import RIDER_COOKIE
from services.reporter.credentials import valid_rider_token
from services.reporter.fastpath import JsonReportFastPath
from services.reporter.models import Report
from services.reporter.reports import rider_ref_for
from tests.support.reporter import REPORTER_SECRET, apply_event, make_jpeg, reporter_app, staff_token


@pytest.fixture
def reporter(db_url: str, tmp_path: Path) -> Iterator[tuple[FastAPI, dict[str, Place]]]:
    """The reporter app and its demo places by id."""
    app, places = reporter_app(db_url, tmp_path / "var")
    yield app, {p.place_id: p for p in places}
    app.state.reporter.runtime.db.dispose()


def count(app: FastAPI, sql: str, **params: Any) -> int:
    """One number from the reporter's database."""
    with app.state.reporter.runtime.db.session() as s:
        return int(s.execute(text(sql), params).scalar() or 0)


def open_case(app: FastAPI, case_id: str, report_id: str, category: str = "manhole_cover") -> None:
    """`case.opened` for a report, as the closer publishes it."""
    now = datetime.now(UTC)
    data = CaseOpened(
        case_id=case_id,
        report_id=report_id,
        station_id="yh-s1",
        category=category,
        opened_at=now,
        resolve_due=now + timedelta(hours=8),
    )
    apply_event(app, "case.opened", data, case_id)


def move_case(
    app: FastAPI, case_id: str, action: str, status: str, version: int, note: str | None = None
) -> None:
    """A case transition, as the closer publishes it."""
    data = CaseTransitioned(
        case_id=case_id,
        action=action,
        status=status,
        station_id="yh-s1",
        version=version,
        at=datetime.now(UTC),
        note=note,
    )
    apply_event(app, f"case.{status}", data, case_id)


def key_of(tracking_url: str) -> str:
    """The tracking secret in a tracking link."""
    return parse_qs(urlsplit(tracking_url).query)["k"][0]


def test_tracking_secret_unlocks_the_owner_view_and_feedback(
    reporter: tuple[FastAPI, dict[str, Place]],
) -> None:
    """The 202 carries the tracking link with its secret; the row keeps only a keyed hash; without the
    rider's cookie or the secret the report shows status and timeline only and feedback is 403."""
    app, places = reporter
    rider, stranger = TestClient(app), TestClient(app)
    words = "井盖松了，电话 138"
    r = rider.post(
        "/api/v1/reports",
        json={"code": places["yh-p01"].code, "category": "manhole_cover", "description": words},
    )
    assert r.status_code == 202
    answer = r.json()
    assert set(answer) == {"report_id", "case_id", "status", "tracking_url"}
    report_id, key = answer["report_id"], key_of(answer["tracking_url"])
    assert answer["tracking_url"] == f"http://127.0.0.1:8001/t/{report_id}?k={key}" and len(key) == 22
    with app.state.reporter.runtime.db.session() as s:
        row = s.get(Report, report_id)
        assert row is not None and row.tracking_hash is not None
        assert key not in row.model_dump_json()  # only a keyed hash of it

    # the tracking page: words for the owner (cookie or ?k=), not for anyone holding the report id
    assert words not in stranger.get(f"/t/{report_id}").text
    assert words not in stranger.get(f"/t/{report_id}?k=wrong{key[5:]}").text
    unlocked = stranger.get(f"/t/{report_id}?k={key}").text
    assert words in unlocked and f'"trackingKey": "{key}"' in unlocked  # the page's answer sends it along
    assert '"trackingKey": null' in rider.get(f"/t/{report_id}").text
    assert words in rider.get(f"/t/{report_id}").text

    open_case(app, "c_own", report_id)
    move_case(app, "c_own", "resolve", "resolved", 3, note="已更换井盖")
    url = f"/api/v1/reports/{report_id}/feedback"
    for refused in (
        stranger.post(url, json={"fixed": True}),
        stranger.post(url, json={"fixed": True}, headers={"X-Tracking-Key": "x" * 22}),
        stranger.post(f"{url}?k={report_id}", json={"fixed": True}),
    ):
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_your_report"
    assert count(app, "SELECT count(*) FROM feedback") == 0
    assert count(app, "SELECT count(*) FROM outbox WHERE topic = 'reports.feedback'") == 0
    page = stranger.get(f"/t/{report_id}").text
    assert 'id="feedback"' not in page and "已更换井盖" in page  # the staff note is public

    given = stranger.post(url, json={"fixed": False, "comment": "还是松的"}, headers={"X-Tracking-Key": key})
    assert given.status_code == 201 and given.json()["comment"] == "还是松的"
    assert count(app, "SELECT count(*) FROM feedback") == 1
    assert stranger.get(f"/api/v1/reports/{report_id}").json()["feedback"] is None
    assert rider.get(f"/api/v1/reports/{report_id}").json()["feedback"]["comment"] == "还是松的"
    assert stranger.get(f"/api/v1/reports/{report_id}?k={key}").json()["feedback"]["comment"] == "还是松的"
    assert "还是松的" not in stranger.get(f"/t/{report_id}").text
    # the cookie that sent the report answers too (a repeat of the same answer is harmless)
    assert rider.post(url, json={"fixed": False, "comment": "还是松的"}).status_code == 200
    assert [i["report_id"] for i in rider.get("/api/v1/me/reports").json()["items"]] == [report_id]
    assert stranger.get("/api/v1/me/reports").json()["items"] == []


def test_open311_feed_shows_no_rider_words_or_photos(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """Anonymous Open311 readers get no description and no rider photo; an integrator's own http(s)
    media_url stays, a javascript: one is 400; a control character in an address breaks no XML."""
    app, places = reporter
    rider = TestClient(app)
    photo = ("a.jpg", make_jpeg(800, 600), "image/jpeg")
    form = {
        "code": places["yh-p02"].code,
        "category": "sanitation",
        "description": "垃圾堆，我是王师傅",
        "address": "王师傅家楼下",
    }
    r = rider.post("/api/v1/reports", data=form, files=[("photos", photo)])
    assert r.status_code == 202
    rider_report = r.json()["report_id"]

    admin = {"Authorization": f"Bearer {staff_token('boss')}"}
    api_key = (
        TestClient(app).post("/api/v1/open311/keys", json={"name": "12345"}, headers=admin).json()["api_key"]
    )
    base = "/open311/v2"
    post = {
        "api_key": api_key,
        "service_code": "fire_lane_blocked",
        "address_string": "开鲁路\x01100号\u202e",
        "description": "堵了 <b>",
    }
    bad = TestClient(app).post(f"{base}/requests.json", data={**post, "media_url": "javascript:alert(1)"})
    assert bad.status_code == 400 and "media_url" in bad.json()[0]["description"]
    made = TestClient(app).post(
        f"{base}/requests.json", data={**post, "media_url": "https://example.org/p.jpg"}
    )
    assert made.status_code == 200
    integrated = made.json()[0]["service_request_id"]

    feed = {i["service_request_id"]: i for i in TestClient(app).get(f"{base}/requests.json").json()}
    assert set(feed) == {rider_report, integrated}
    assert feed[rider_report]["description"] == "" and feed[rider_report]["media_url"] is None
    assert (
        feed[integrated]["description"] == "" and feed[integrated]["media_url"] == "https://example.org/p.jpg"
    )
    assert feed[integrated]["address"] == "开鲁路100号"
    assert "王师傅" not in TestClient(app).get(f"{base}/requests/{rider_report}.json").text
    root = ET.fromstring(TestClient(app).get(f"{base}/requests.xml").content)
    assert sorted(e.text or "" for e in root.iter("address")) == sorted(
        ["开鲁路100号", places["yh-p02"].name_zh]
    )
    assert "王师傅" not in ET.tostring(root, encoding="unicode")

    open_case(app, "c_o311", rider_report, "sanitation")
    move_case(app, "c_o311", "resolve", "resolved", 2, note="已清运")
    shown = TestClient(app).get(f"{base}/requests/{rider_report}.json").json()[0]
    assert "已清运" in shown["status_notes"] and shown["description"] == ""


def test_forged_cookies_make_no_riders_and_new_riders_are_limited(
    reporter: tuple[FastAPI, dict[str, Place]],
) -> None:
    """A made-up cookie is ignored (a signed token is issued instead); fresh tokens from one address
    are limited (429 with Retry-After); a rider already counted keeps reporting."""
    app, places = reporter
    app.state.reporter.limits = RateLimits(per_code=0, per_rider=0, per_address=0, new_riders_per_address=2)
    body = {"code": places["yh-p03"].code, "category": "other"}
    forged = "k" * 24
    first = TestClient(app, cookies={RIDER_COOKIE: forged})
    r = first.post("/api/v1/reports", json=body)
    assert r.status_code == 202
    issued = r.cookies.get(RIDER_COOKIE)
    assert issued != forged and valid_rider_token(issued, REPORTER_SECRET)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    with app.state.reporter.runtime.db.session() as s:
        stored = s.get(Report, r.json()["report_id"])
        assert stored is not None and stored.rider_ref != rider_ref_for(forged, REPORTER_SECRET)
        assert stored.new_rider is True

    second = TestClient(app)
    assert second.get(f"/r/{places['yh-p03'].code}").status_code == 200  # the page gives a token
    assert valid_rider_token(second.cookies.get(RIDER_COOKIE), REPORTER_SECRET)
    assert second.post("/api/v1/reports", json=body).status_code == 202
    for farmed in (TestClient(app, cookies={RIDER_COOKIE: "z" * 30}), TestClient(app)):
        refused = farmed.post("/api/v1/reports", json=body)
        assert refused.status_code == 429 and refused.json()["error"]["details"]["limit"] == "new_riders"
        assert 0 < int(refused.headers["Retry-After"]) <= 600
    again = TestClient(app, cookies={RIDER_COOKIE: str(issued)})
    assert again.post("/api/v1/reports", json=body).status_code == 202  # already one of the two
    assert count(app, "SELECT count(*) FROM report") == 3


def test_rider_cookie_is_secure_behind_https(db_url: str, tmp_path: Path) -> None:
    """The cookie gets Secure when the public base URL is https."""
    app, places = reporter_app(db_url, tmp_path / "var", public_base_url="https://report.example.org")
    try:
        r = TestClient(app).post("/api/v1/reports", json={"code": places[0].code, "category": "other"})
        assert r.status_code == 202 and "Secure" in r.headers["set-cookie"]
        assert r.json()["tracking_url"].startswith("https://report.example.org/t/")
        page = TestClient(app).get(f"/r/{places[0].code}")
        assert "Secure" in page.headers["set-cookie"]
    finally:
        app.state.reporter.runtime.db.dispose()


def test_idempotency_keys_are_per_caller(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """Another rider (or API key) sending the same key and body gets a report of their own; the same
    rider's replay answers the same report and tracking link."""
    app, places = reporter
    body = {"code": places["yh-p04"].code, "category": "sanitation"}
    headers = {"Idempotency-Key": "same-key-for-everyone"}
    a, b = TestClient(app), TestClient(app)
    first = a.post("/api/v1/reports", json=body, headers=headers)
    other = b.post("/api/v1/reports", json=body, headers=headers)
    again = a.post("/api/v1/reports", json=body, headers=headers)
    assert first.status_code == other.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert other.json()["report_id"] != first.json()["report_id"]
    assert key_of(other.json()["tracking_url"]) != key_of(first.json()["tracking_url"])
    assert count(app, "SELECT count(*) FROM report") == 2

    admin = {"Authorization": f"Bearer {staff_token('boss')}"}
    keys = [
        TestClient(app).post("/api/v1/open311/keys", json={"name": n}, headers=admin).json()["api_key"]
        for n in ("one", "two")
    ]
    form = {"service_code": "other", "lat": "31.3395", "long": "121.511"}
    ids = [
        TestClient(app)
        .post("/open311/v2/requests.json", data={**form, "api_key": k}, headers=headers)
        .json()[0]["service_request_id"]
        for k in (keys[0], keys[1], keys[0])
    ]
    assert ids[0] != ids[1] and ids[2] == ids[0]


def test_bad_input_is_answered_4xx_never_500(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """Open311 dates out of range, deeply nested JSON (fast path and FastAPI route), oversize bodies."""
    app, _places = reporter
    client = TestClient(app)
    for value in ("9999-12-31T23:59:59-05:00", "0001-01-01"):
        for name in ("end_date", "start_date"):
            r = client.get("/open311/v2/requests.json", params={name: value})
            assert r.status_code == 400 and r.json()[0]["code"] == 400
    deep = b"[" * 30000 + b"]" * 30000
    r = client.post("/api/v1/reports", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    app.user_middleware = [m for m in app.user_middleware if m.cls is not JsonReportFastPath]
    app.middleware_stack = app.build_middleware_stack()
    r = TestClient(app).post("/api/v1/reports", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    big = b'{"category": "other", "description": "' + b"x" * 70000 + b'"}'
    r = TestClient(app).post("/api/v1/reports", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["message"] == "The request is larger than 64 KB."
    admin = {"Authorization": f"Bearer {staff_token('boss')}", "Content-Type": "application/json"}
    r = TestClient(app).post("/api/v1/places", content=deep, headers=admin)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_plus_one_joins_only_an_open_case_of_the_same_kind_nearby(
    reporter: tuple[FastAPI, dict[str, Place]],
) -> None:
    """Same place or within the category's duplicate radius, same category, still open: else 422
    `plus_one_mismatch` and nothing stored."""
    app, places = reporter
    here = places["yh-p01"]
    first = TestClient(app).post("/api/v1/reports", json={"code": here.code, "category": "manhole_cover"})
    open_case(app, "c_here", first.json()["report_id"])

    def plus_one(**fields: Any) -> httpx.Response:
        return TestClient(app).post("/api/v1/reports", json={"plus_one_case_id": "c_here", **fields})

    stored = count(app, "SELECT count(*) FROM report")
    for refused in (
        plus_one(code=here.code, category="fire_lane_blocked"),  # another kind of problem
        plus_one(code=places["yh-p06"].code, category="manhole_cover"),  # 1.3 km away
        plus_one(category="manhole_cover", location={"lat": 31.35, "lon": 121.511}),  # far
        TestClient(app).post(
            "/api/v1/reports",
            json={"code": here.code, "category": "manhole_cover", "plus_one_case_id": "c_nope"},
        ),
    ):
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "plus_one_mismatch"
    assert count(app, "SELECT count(*) FROM report") == stored
    assert plus_one(code=here.code, category="manhole_cover").status_code == 202
    assert (
        plus_one(category="manhole_cover", location={"lat": here.lat + 0.0001, "lon": here.lon}).status_code
        == 202
    )
    move_case(app, "c_here", "reject", "rejected", 5)
    assert plus_one(code=here.code, category="manhole_cover").status_code == 422


def test_bodies_are_read_after_auth_and_capped(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """An anonymous 2 MB feedback, admin or Open311 body is refused before it is read; the owner's
    oversize feedback is cut at the cap."""
    app, places = reporter
    owner = TestClient(app)
    answer = owner.post("/api/v1/reports", json={"code": places["yh-p05"].code, "category": "other"}).json()
    report_id, key = answer["report_id"], key_of(answer["tracking_url"])
    chunk = b" " * 65536

    async def send(path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], int]:
        pulled = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal pulled
            for _ in range(32):  # 2 MB
                pulled += 1
                yield chunk

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reporter") as client:
            r = await client.post(
                path, content=body(), headers={"Content-Type": "application/json", **headers}
            )
        return r.status_code, r.json(), pulled

    cases = [
        (f"/api/v1/reports/{report_id}/feedback", {}, 403),
        ("/api/v1/places", {}, 401),
        ("/api/v1/codes", {"Authorization": "Bearer nope"}, 401),
        ("/api/v1/open311/keys", {}, 401),
        (
            "/open311/v2/requests.json?api_key=wrong",
            {"Content-Type": "application/x-www-form-urlencoded"},
            403,
        ),
    ]
    for path, headers, status in cases:
        got, _body, pulled = asyncio.run(send(path, headers))
        assert (got, pulled) == (status, 0), path
    got, body, pulled = asyncio.run(send(f"/api/v1/reports/{report_id}/feedback", {"X-Tracking-Key": key}))
    assert got == 413 and body["error"]["message"] == "The request is larger than 64 KB." and pulled == 2


def test_revoked_staff_tokens_are_refused(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """`staff.tokens_revoked` from `staff.events`: tokens below the newest version, or of a disabled
    account, are 401 `token_revoked` on the admin API; older or repeated events change nothing."""
    app, _places = reporter
    client = TestClient(app)

    def keys(version: int, username: str = "boss") -> int:
        headers = {"Authorization": f"Bearer {staff_token(username, version=version)}"}
        r = client.get("/api/v1/open311/keys", headers=headers)
        if r.status_code == 401:
            assert r.json()["error"]["code"] == "token_revoked"
        return r.status_code

    def revoke(version: int, active: bool, at: datetime) -> None:
        data = StaffTokensRevoked(username="boss", token_version=version, active=active, at=at)
        apply_event(app, "staff.tokens_revoked", data, "boss")

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    assert keys(0) == 200
    revoke(2, True, t0)
    revoke(2, True, t0)  # a replay
    assert (keys(0), keys(1), keys(2), keys(0, "other")) == (401, 401, 200, 200)
    revoke(1, False, t0 + timedelta(minutes=1))  # older version: ignored
    assert keys(2) == 200
    revoke(2, False, t0 + timedelta(minutes=2))  # disabled, same version
    assert keys(2) == 401
    headers = {"Authorization": f"Bearer {staff_token('boss', version=2)}"}
    r = client.post(
        "/api/v1/places", json={"name_zh": "新地点", "lat": 31.34, "lon": 121.51}, headers=headers
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_revoked"
    assert count(app, "SELECT count(*) FROM staff_token") == 1
    revoke(3, True, t0 + timedelta(minutes=3))  # enabled again, older tokens still out
    assert (keys(2), keys(3)) == (401, 200)


def test_limits_key_on_the_forwarded_address_behind_a_trusted_proxy(db_url: str, tmp_path: Path) -> None:
    """Behind a trusted proxy each rider is limited by their own (forwarded) address, IPv6 by /64; a
    stranger's X-Forwarded-For is not believed."""
    app, places = reporter_app(db_url, tmp_path / "var")
    app.state.reporter.settings = app.state.reporter.settings.model_copy(
        update={"trusted_proxies": "10.0.0.0/8"}
    )
    app.state.reporter.limits = RateLimits(per_code=0, per_rider=0, per_address=1, new_riders_per_address=0)
    body = {"code": places[0].code, "category": "other"}

    async def post(peer: str, forwarded: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(peer, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://reporter") as client:
            r = await client.post("/api/v1/reports", json=body, headers={"X-Forwarded-For": forwarded})
        return r.status_code

    try:
        via_proxy = [
            asyncio.run(post("10.0.0.5", "203.0.113.7")),
            asyncio.run(post("10.0.0.5", "203.0.113.8")),  # another rider behind the same proxy
            asyncio.run(post("10.0.0.5", "203.0.113.7")),  # the first again: over its limit
            asyncio.run(post("10.0.0.5", "2001:db8:1:2::a")),
            asyncio.run(post("10.0.0.5", "2001:db8:1:2::b")),  # same /64
        ]
        assert via_proxy == [202, 202, 429, 202, 429]
        # not a proxy of ours: its header is ignored, the peer is the client
        assert [asyncio.run(post("198.51.100.1", f"203.0.113.{n}")) for n in (20, 21)] == [202, 429]
    finally:
        app.state.reporter.runtime.db.dispose()


def test_places_and_codes_are_scoped_to_the_callers_streets(
    reporter: tuple[FastAPI, dict[str, Place]],
) -> None:
    """The reporter filters places, codes and code sheets by gridloop/scope.py, from the token's
    streets: the demo places are all 殷行's, so 彭浦's supervisor sees none and gets 404 on a sheet."""
    app, places = reporter
    client = TestClient(app)

    def auth(role: str, streets: list[str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {staff_token('boss', role=role, streets=streets)}"}

    yh, pp, city = auth("supervisor", ["yinhang"]), auth("supervisor", ["pengpu"]), auth("city", [])
    old = auth("supervisor", None)  # a token from before streets: fails closed
    listed = {
        name: (
            len(client.get("/api/v1/places", headers=h).json()["items"]),
            len(client.get("/api/v1/codes", headers=h).json()["items"]),
            client.get("/api/v1/stations/yh-s1/codes/sheet", headers=h).status_code,
        )
        for name, h in (("yh", yh), ("pp", pp), ("city", city), ("old", old))
    }
    n = len(places)
    assert listed == {"yh": (n, n, 200), "pp": (0, 0, 404), "city": (n, n, 200), "old": (0, 0, 404)}

    # changes: an admin of 彭浦 cannot place a code in 殷行, nor touch 殷行's codes (404: private)
    pp_admin, yh_admin = auth("admin", ["pengpu"]), auth("admin", ["yinhang"])
    p01 = places["yh-p01"]
    new_place = {"name_zh": "新地点", "lat": p01.lat, "lon": p01.lon}
    r = client.post("/api/v1/places", json=new_place, headers=pp_admin)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "outside_your_streets")
    r = client.post("/api/v1/codes", json={"place_id": "yh-p01"}, headers=pp_admin)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_place")
    for action in ("deactivate", "replace"):
        r = client.post(f"/api/v1/codes/{p01.code}/{action}", headers=pp_admin)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_code")
    assert client.post("/api/v1/codes", json={"place_id": "yh-p01"}, headers=yh_admin).status_code == 201
    assert client.post("/api/v1/places", json=new_place, headers=yh_admin).status_code == 201
    assert count(app, "SELECT count(*) FROM place") == n + 1
