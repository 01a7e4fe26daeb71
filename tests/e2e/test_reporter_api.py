"""The reporter's rider API end to end: the three services as real processes on Apache Kafka.

Case state beyond `new` is driven by publishing `cases.events` messages onto the stack's own topics,
as the closer would (so these tests do not depend on the closer's lifecycle being built).
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer
from PIL import Image

from gridloop.demo import DEMO_PLACES
from gridloop.stack import Stack
from gridloop.topics import REPORTS_FEEDBACK
from schemas import codes
from schemas.reference import load_places
from tests.support.reporter import LOOSE_LIMITS, case_of, make_jpeg, publish_case_events, report, status_of
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PLACES = {p.place_id: p for p in load_places(DEMO_PLACES)}
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


def rejected_count(base: str, reason: str) -> float:
    """The value of gridloop_reports_rejected_total for one reason."""
    text = httpx.get(f"{base}/metrics").text
    match = re.search(rf'gridloop_reports_rejected_total\{{reason="{reason}"\}} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def received_count(base: str, category: str, channel: str) -> float:
    """The value of gridloop_reports_received_total for one category and channel."""
    text = httpx.get(f"{base}/metrics").text
    pattern = rf'gridloop_reports_received_total\{{category="{category}",channel="{channel}"\}} ([0-9.e+]+)'
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


# --- the stack -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack for this module, with rate limits out of the way."""
    prefix = f"rep{uuid.uuid4().hex[:6]}."
    settings = stack_settings(tmp_path_factory.mktemp("reporter"), kafka_bootstrap, prefix)
    s = start_stack(settings, "external", True, **LOOSE_LIMITS)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def admin(stack: Stack) -> dict[str, str]:
    """Bearer header of the demo admin."""
    return {"Authorization": f"Bearer {staff_token(stack.url('closer'), 'admin')}"}


# --- intake ----------------------------------------------------------------------------------


def test_scan_page_is_small_and_shows_place_and_categories(stack: Stack) -> None:
    """/r/{code}: place, station, the 12 category buttons with icons; a few KB over the wire."""
    base = stack.url("reporter")
    place = PLACES["yh-p01"]
    page = httpx.get(f"{base}/r/{place.code}", headers={"Accept-Encoding": "gzip"})
    assert page.status_code == 200
    html = page.text
    assert place.name_zh in html and "开鲁网格站" in html
    # no inline script: the page's policy allows scripts from this origin only
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in html
    for name in (
        "安全隐患",
        "公共设施损坏",
        "路面突发事件",
        "消防通道堵塞",
        "电动车飞线充电",
        "井盖缺失或破损",
    ):
        assert name in html
    for name in ("共享单车堆积", "小区进门难", "燃气隐患", "环境卫生", "报告码损坏", "其他"):
        assert name in html
    assert html.count('name="category"') == 12
    assert 'lang="zh-CN"' in html
    wire = len(page.content) if "gzip" not in page.headers.get("content-encoding", "") else None
    compressed = 0
    for path in (f"/r/{place.code}", "/static/rider.js?v=2", "/static/rider.css?v=2"):
        with httpx.stream("GET", base + path, headers={"Accept-Encoding": "gzip"}) as r:
            compressed += sum(len(chunk) for chunk in r.iter_raw())
    assert compressed < 12_000, f"the scan page weighs {compressed} bytes compressed"
    del wire
    english = httpx.get(f"{base}/r/{place.code}?lang=en")
    assert "What is wrong?" in english.text and "Missing or broken manhole cover" in english.text


def test_multipart_report_with_photos_is_cleaned(stack: Stack) -> None:
    """A report with two camera photos: 202, photos re-encoded as JPEG, downscaled, no EXIF or GPS."""
    base = stack.url("reporter")
    place = PLACES["yh-p02"]
    before = received_count(base, "road_incident", "scan")
    with httpx.Client(timeout=30) as rider:
        r = report(
            base,
            place.code,
            "road_incident",
            client=rider,
            photos=[("a.jpg", make_jpeg(), "image/jpeg"), ("b.jpg", make_jpeg(800, 600), "image/jpeg")],
            description="路面塌陷",
            danger_now=True,
            platform="美团",
            rider_no="MT-123",
        )
        assert r.status_code == 202, r.text
        report_id = r.json()["report_id"]
        track = rider.get(f"{base}/t/{report_id}").text  # the owner sees their photos
    photo_urls = re.findall(r'src="(/api/v1/photos/[^"]+)"', track)
    assert len(photo_urls) == 2
    for url in photo_urls:
        got = httpx.get(base + url)
        assert got.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(got.content))
        assert image.format == "JPEG" and max(image.size) <= 1600
        assert not image.getexif() and "exif" not in image.info
    assert received_count(base, "road_incident", "scan") == before + 1
    view = httpx.get(f"{base}/api/v1/reports/{report_id}").json()
    assert "rider_no" not in json.dumps(view) and "MT-123" not in json.dumps(view)
    case_of(base, report_id)


def test_bad_inputs_are_clear_errors(stack: Stack) -> None:
    """Unknown, mistyped, deactivated-free bad input: each a clear error, counted by reason."""
    base = stack.url("reporter")
    good = PLACES["yh-p03"].code
    typo = good[:-1] + ("2" if good[-1] != "2" else "3")
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"code": "HELLO"}, 422, "bad_code", "bad_code"),
        ({"code": typo}, 422, "check_the_code", "mistyped_code"),
        ({"code": good, "category": "flying_saucer"}, 422, "unknown_category", "unknown_category"),
        ({"code": good, "description": "井" * 501}, 422, "invalid", "invalid"),
        ({"code": good, "website": "http://spam.example"}, 422, "invalid", "honeypot"),
    ]
    for fields, status, code, reason in cases:
        category = fields.pop("category", "manhole_cover")
        before = rejected_count(base, reason) if reason else 0
        r = report(base, fields.pop("code"), category, **fields)
        assert r.status_code == status, (fields, r.text)
        if code:
            assert r.json()["error"]["code"] == code
            assert rejected_count(base, reason) == before + 1
    unknown = "2345678" + codes.check_char("2345678")
    assert unknown not in {p.code for p in PLACES.values()}
    r = report(base, unknown)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_code"
    assert report(base, good, description="井" * 500).status_code == 202  # 500 is still fine

    # a text file renamed .jpg
    before = rejected_count(base, "not_an_image")
    r = report(base, good, photos=[("photo.jpg", b"just some text, not a picture\n" * 20, "image/jpeg")])
    assert r.status_code == 415 and r.json()["error"]["code"] == "not_an_image"
    assert rejected_count(base, "not_an_image") == before + 1
    # a 12 MB upload
    r = report(base, good, photos=[("big.jpg", b"\xff\xd8\xff" + b"\0" * (12 * 1024 * 1024), "image/jpeg")])
    assert r.status_code == 413 and r.json()["error"]["code"] in ("photo_too_large", "payload_too_large")
    # four photos
    small = make_jpeg(64, 64)
    r = report(base, good, photos=[(f"{i}.jpg", small, "image/jpeg") for i in range(4)])
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_photos"
    # not JSON, not a form
    r = httpx.post(f"{base}/api/v1/reports", content=b"code=1", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = httpx.post(f"{base}/api/v1/reports", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    # no code and no location
    r = httpx.post(f"{base}/api/v1/reports", json={"category": "other"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "code_or_location_required"


def test_idempotency_key_replays_and_conflicts(stack: Stack) -> None:
    """Same key and body (photos included) from the same rider answer the same report (and tracking
    link); another body under the key is 409; another rider's same key is a report of their own."""
    base = stack.url("reporter")
    code = PLACES["yh-p04"].code
    key = str(uuid.uuid4())
    photo = make_jpeg(640, 480)
    rider = httpx.Client(timeout=30)
    first = report(base, code, "sanitation", key=key, client=rider, photos=[("a.jpg", photo, "image/jpeg")])
    again = report(base, code, "sanitation", key=key, client=rider, photos=[("a.jpg", photo, "image/jpeg")])
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    stranger = report(base, code, "sanitation", key=key, photos=[("a.jpg", photo, "image/jpeg")])
    assert stranger.status_code == 202 and stranger.json()["report_id"] != first.json()["report_id"]
    before = rejected_count(base, "idempotency_conflict")
    other_photo = make_jpeg(320, 240)
    r = report(base, code, "sanitation", key=key, client=rider, photos=[("a.jpg", other_photo, "image/jpeg")])
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_reused"
    photos = [("a.jpg", photo, "image/jpeg")]
    r = report(base, code, "sanitation", key=key, client=rider, photos=photos, description="x")
    assert r.status_code == 409
    assert rejected_count(base, "idempotency_conflict") == before + 2
    rider.close()


def test_rider_text_is_escaped_everywhere(stack: Stack, admin: dict[str, str]) -> None:
    """HTML and script typed by a rider (or an admin) are shown escaped on every page and in XML."""
    base = stack.url("reporter")
    with httpx.Client(timeout=30) as rider:
        r = report(base, PLACES["yh-p05"].code, "other", client=rider, description=XSS)
        assert r.status_code == 202
        report_id = r.json()["report_id"]
        pages = [rider.get(f"{base}/t/{report_id}").text, rider.get(f"{base}/my").text]
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;"
    assert escaped in pages[0]
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html
    xml = httpx.get(f"{base}/open311/v2/requests/{report_id}.xml").text
    assert "alert" not in xml and "onerror" not in xml  # the public feed carries no rider words
    # a place name typed by an admin, on the scan page and the printed sheet
    made = httpx.post(
        f"{base}/api/v1/places",
        json={"name_zh": "<b>坏</b><script>x()</script>", "lat": 31.3371, "lon": 121.5133},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    code = made.json()["code"]["code"]
    scan = httpx.get(f"{base}/r/{code}").text
    assert "&lt;b&gt;坏&lt;/b&gt;&lt;script&gt;x()&lt;/script&gt;" in scan and "<script>x()" not in scan
    sheet = httpx.get(f"{base}/api/v1/stations/yh-s1/codes/sheet", headers=admin).text
    assert "&lt;script&gt;x()" in sheet and "<script>x()" not in sheet


def test_gps_report_without_code_is_routed_by_polygon(stack: Stack) -> None:
    """The damaged-code fallback: a report by GPS goes to the station of the grid it falls in."""
    base = stack.url("reporter")
    place = PLACES["yh-p07"]  # a point in yh-g2 (国和)
    where = httpx.get(f"{base}/api/v1/locate", params={"lat": place.lat, "lon": place.lon}).json()
    assert where["grid_id"] == "yh-g2" and where["station_id"] == "yh-s2"
    before = received_count(base, "sanitation", "manual")
    r = report(base, None, "sanitation", location={"lat": place.lat, "lon": place.lon}, via="manual")
    assert r.status_code == 202, r.text
    report_id = r.json()["report_id"]
    case_of(base, report_id)
    assert httpx.get(f"{base}/api/v1/reports/{report_id}").json()["station_id"] == "yh-s2"
    assert received_count(base, "sanitation", "manual") == before + 1
    manual = httpx.get(f"{base}/r")
    assert manual.status_code == 200 and 'id="code-input"' in manual.text and 'id="locate"' in manual.text
    typed = httpx.get(f"{base}/r", params={"code": place.code.lower()[:4] + "-" + place.code[4:]})
    assert typed.status_code == 303 and typed.headers["location"] == f"/r/{place.code}?via=manual"


# --- tracking, +1, feedback ------------------------------------------------------------------


def test_open_cases_and_plus_one(stack: Stack) -> None:
    """The open cases at a place are offered for '+1'; a +1 report joins that case; a closed case is gone."""
    base = stack.url("reporter")
    place = PLACES["yh-p08"]
    first = report(base, place.code, "shared_bikes", description="第一位骑手的话：电话 138")
    case_id = case_of(base, first.json()["report_id"])
    items = httpx.get(f"{base}/api/v1/places/{place.place_id}/open-cases").json()["items"]
    assert [i["case_id"] for i in items] == [case_id]
    assert items[0]["category"] == "shared_bikes" and items[0]["distinct_riders"] == 1
    assert "电话" not in json.dumps(items, ensure_ascii=False)  # never another rider's words
    scan = httpx.get(f"{base}/r/{place.code}").text
    assert f'data-case="{case_id}"' in scan and "已有人报告" in scan and "共享单车堆积" in scan

    plus = report(base, place.code, "shared_bikes", plus_one_case_id=case_id)
    assert plus.status_code == 202
    assert case_of(base, plus.json()["report_id"]) == case_id
    wait_for(
        lambda: (
            httpx.get(f"{base}/api/v1/places/{place.place_id}/open-cases").json()["items"][0][
                "distinct_riders"
            ]
            == 2
        ),
        what="two riders on the case",
    )
    publish_case_events(stack, case_id, [("rejected", "rejected", 50)], note="重复")
    wait_for(
        lambda: not httpx.get(f"{base}/api/v1/places/{place.place_id}/open-cases").json()["items"],
        what="the rejected case leaving the open list",
    )
    assert httpx.get(f"{base}/api/v1/places/nowhere/open-cases").status_code == 404


def read_feedback_events(stack: Stack, case_id: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The `report.feedback` events of a case on the stack's topic."""
    consumer = KafkaConsumer(
        stack.settings.topic_prefix + REPORTS_FEEDBACK,
        bootstrap_servers=stack.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    found: list[dict[str, Any]] = []
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    try:
        while len(found) < count and datetime.now(UTC) < deadline:
            for message in consumer:
                event = json.loads(message.value)
                if message.key == case_id.encode() and event["type"] == "gridloop.report.feedback.v1":
                    found.append(event)
    finally:
        consumer.close()
    return found


def test_tracking_timeline_and_feedback(stack: Stack) -> None:
    """Timeline in plain Chinese; after-photo once resolved; deny needs a comment; confirm with a rating."""
    base = stack.url("reporter")
    place = PLACES["yh-p09"]
    with httpx.Client(timeout=30) as rider:
        r = report(base, place.code, "ebike_flying_wire", client=rider, description="飞线充电")
        report_id = r.json()["report_id"]
        case_id = case_of(base, report_id)
        early = rider.post(f"{base}/api/v1/reports/{report_id}/feedback", json={"fixed": True})
        assert early.status_code == 409 and early.json()["error"]["code"] == "not_resolved"

        publish_case_events(
            stack,
            case_id,
            [
                ("acknowledged", "acknowledged", 2),
                ("dispatched", "dispatched", 3),
                ("resolved", "resolved", 4),
            ],
            after_photo_ids=["ph_after1"],
            note="已拆除飞线",
        )
        wait_for(lambda: status_of(base, report_id) == "resolved", what="resolved")
        page = rider.get(f"{base}/t/{report_id}").text
        for words in ("已受理", "网格站已签收", "已派人处置", "已办结", "已拆除飞线", "问题解决了吗"):
            assert words in page, words
        view = httpx.get(f"{base}/api/v1/reports/{report_id}").json()
        assert view["after_photo_urls"] == [f"{stack.settings.closer_public_url}/photos/ph_after1.jpg"]
        assert "ph_after1.jpg" in page

        url = f"{base}/api/v1/reports/{report_id}/feedback"
        r = rider.post(url, json={"fixed": False, "comment": "  "})
        assert r.status_code == 422 and r.json()["error"]["code"] == "comment_required"
        assert rider.post(url, json={"fixed": True, "rating": 6}).status_code == 422
        assert rider.post(url, json={"fixed": False, "comment": "x" * 501}).status_code == 422
        deny = {"fixed": False, "rating": 2, "comment": "电线还在 <b>楼道</b>"}
        r = rider.post(url, json=deny)
        assert r.status_code == 201, r.text
        assert rider.post(url, json=deny).status_code == 200  # a double tap is harmless
        r = rider.post(url, json={"fixed": True})
        assert r.status_code == 409 and r.json()["error"]["code"] == "feedback_given"
        page = rider.get(f"{base}/t/{report_id}").text
        assert "您反馈没修好" in page and "&lt;b&gt;楼道&lt;/b&gt;" in page and "问题解决了吗" not in page

        events = read_feedback_events(stack, case_id, 1)
        assert len(events) == 1
        assert events[0]["data"]["fixed"] is False and events[0]["data"]["comment"] == deny["comment"]
        assert events[0]["data"]["report_id"] == report_id and events[0]["subject"] == case_id

        # the closer reopens on a denial, fixes it again; now the rider confirms with 5 stars
        publish_case_events(stack, case_id, [("reopened", "dispatched", 5), ("resolved", "resolved", 6)])
        wait_for(
            lambda: (
                httpx.get(f"{base}/api/v1/reports/{report_id}").json()["timeline"][-1]["action"] == "resolved"
            ),
            what="resolved again",
        )
        assert "问题解决了吗" in rider.get(f"{base}/t/{report_id}").text
        r = rider.post(url, json={"fixed": True, "rating": 5})
        assert r.status_code == 201
        assert len(read_feedback_events(stack, case_id, 2)) == 2
        publish_case_events(stack, case_id, [("closed", "closed", 7)])
        wait_for(lambda: status_of(base, report_id) == "closed", what="closed")
        assert "已结案" in rider.get(f"{base}/t/{report_id}").text
        # an event older than what the report shows does not move it back (same key: same partition,
        # so once the newer escalation that follows it is applied, the stale one was seen first)
        publish_case_events(stack, case_id, [("dispatched", "dispatched", 3), ("escalated", "closed", 8)])

        def actions() -> list[str]:
            timeline = httpx.get(f"{base}/api/v1/reports/{report_id}").json()["timeline"]
            return [step["action"] for step in timeline]

        wait_for(lambda: actions()[-1] == "escalated", what="the escalation")
        assert actions()[-2] == "closed" and status_of(base, report_id) == "closed"


def test_my_reports_follow_the_cookie(stack: Stack) -> None:
    """'My reports' lists this phone's reports only; public views show no rider details."""
    base = stack.url("reporter")
    with httpx.Client(timeout=30) as mine, httpx.Client(timeout=30) as other:
        ids = [
            report(base, PLACES["yh-p10"].code, c, client=mine, rider_no="ELM-9").json()["report_id"]
            for c in ("sanitation", "other")
        ]
        report(base, PLACES["yh-p10"].code, "other", client=other)
        listed = [i["report_id"] for i in mine.get(f"{base}/api/v1/me/reports").json()["items"]]
        assert listed == ids[::-1]
        assert all(i not in other.get(f"{base}/my").text for i in ids)
        assert all(i in mine.get(f"{base}/my").text for i in ids)
        assert httpx.get(f"{base}/api/v1/me/reports").json() == {"items": []}
        # a stranger with the tracking link sees the status, not the rider's words or number
        page = httpx.get(f"{base}/t/{ids[0]}").text
        assert "ELM-9" not in page and "您的说明" not in page
    assert httpx.get(f"{base}/t/r_doesnotexist").status_code == 404


# --- admin: places, codes, QR ----------------------------------------------------------------


def test_admin_places_and_codes(stack: Stack, admin: dict[str, str]) -> None:
    """Admins create places and codes, deactivate and replace them; QR images point at /r/{code}."""
    base = stack.url("reporter")
    staff = {"Authorization": f"Bearer {staff_token(stack.url('closer'), 'yh-s1')}"}
    body = {"name_zh": "国和路路灯杆 88 号", "name_en": "Lamppost 88", "lat": 31.3372, "lon": 121.5251}
    assert httpx.post(f"{base}/api/v1/places", json=body).status_code == 401
    assert (
        httpx.post(f"{base}/api/v1/places", json=body, headers={"Authorization": "Bearer x"}).status_code
        == 401
    )
    assert httpx.post(f"{base}/api/v1/places", json=body, headers=staff).status_code == 403
    far = httpx.post(f"{base}/api/v1/places", json={**body, "lat": 30.0}, headers=admin)
    assert far.status_code == 422 and far.json()["error"]["code"] == "outside_jurisdiction"
    made = httpx.post(f"{base}/api/v1/places", json={**body, "place_id": "yh-lamp-88"}, headers=admin)
    assert made.status_code == 201, made.text
    place = made.json()
    assert place["grid_id"] == "yh-g2" and place["station_id"] == "yh-s2"
    dup = httpx.post(f"{base}/api/v1/places", json={**body, "place_id": "yh-lamp-88"}, headers=admin)
    assert dup.status_code == 409
    code = place["code"]["code"]
    assert place["code"]["url"] == f"{stack.settings.public_base_url}/r/{code}"
    page = httpx.get(f"{base}/r/{code}")
    assert page.status_code == 200 and "国和路路灯杆 88 号" in page.text and "国和网格站" in page.text

    second = httpx.post(f"{base}/api/v1/codes", json={"place_id": "yh-lamp-88"}, headers=admin)
    assert second.status_code == 201
    assert httpx.post(f"{base}/api/v1/codes", json={"place_id": "nope"}, headers=admin).status_code == 404

    svg = httpx.get(f"{base}/api/v1/codes/{code}.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    png = httpx.get(f"{base}/api/v1/codes/{code}.png")
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size[0] > 100
    import segno

    expected = io.BytesIO()
    segno.make(f"{stack.settings.public_base_url}/r/{code}", error="m", boost_error=False).save(
        expected, kind="png", scale=8, border=2
    )
    assert png.content == expected.getvalue()  # the QR encodes exactly the rider URL
    assert httpx.get(f"{base}/api/v1/codes/{code}.gif").status_code == 404

    # deactivate: a clear page, intake refuses it with 410
    r = httpx.post(
        f"{base}/api/v1/codes/{second.json()['code']}/deactivate", json={"note": "丢失"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["active"] is False
    gone = httpx.get(f"{base}/r/{second.json()['code']}")
    assert gone.status_code == 410 and "这个报告码已停用" in gone.text
    r = report(base, second.json()["code"])
    assert r.status_code == 410 and r.json()["error"]["code"] == "code_deactivated"

    # replace a damaged code: the old page links to the new one
    r = httpx.post(f"{base}/api/v1/codes/{code}/replace", headers=admin)
    assert r.status_code == 201
    new = r.json()["new"]["code"]
    old_page = httpx.get(f"{base}/r/{code}")
    assert old_page.status_code == 410 and f'href="/r/{new}"' in old_page.text
    assert httpx.post(f"{base}/api/v1/codes/{code}/replace", headers=admin).status_code == 409
    listed = httpx.get(f"{base}/api/v1/codes", params={"place_id": "yh-lamp-88"}, headers=admin).json()
    assert [c["code"] for c in listed["items"]] == [new]
    listed = httpx.get(
        f"{base}/api/v1/codes", params={"place_id": "yh-lamp-88", "include_inactive": True}, headers=admin
    ).json()
    assert {c["code"] for c in listed["items"]} == {code, second.json()["code"], new}
    assert httpx.get(f"{base}/api/v1/codes", headers=staff).status_code == 403

    sheet = httpx.get(f"{base}/api/v1/stations/yh-s2/codes/sheet", headers=admin)
    assert sheet.status_code == 200 and "国和路路灯杆 88 号" in sheet.text
    assert f"{new[:4]}-{new[4:]}" in sheet.text and code not in sheet.text
    assert httpx.get(f"{base}/api/v1/stations/yh-s2/codes/sheet", headers=staff).status_code == 404
    assert httpx.get(f"{base}/api/v1/stations/yh-s1/codes/sheet", headers=staff).status_code == 200


# --- Open311 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_key(stack: Stack, admin: dict[str, str]) -> str:
    """An Open311 API key issued by the admin."""
    base = stack.url("reporter")
    assert httpx.post(f"{base}/api/v1/open311/keys", json={"name": "x"}).status_code == 401
    r = httpx.post(f"{base}/api/v1/open311/keys", json={"name": "12345 hotline"}, headers=admin)
    assert r.status_code == 201
    key: str = r.json()["api_key"]
    return key


def xml_of(response: httpx.Response) -> Any:
    """Parse an XML answer, checking the declaration and content type the spec asks for."""
    from xml.etree import ElementTree as ET

    assert response.headers["content-type"].startswith("text/xml")
    assert response.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(response.content)


def test_open311_discovery_and_services(stack: Stack) -> None:
    """discovery, services and service definitions in JSON and XML, shaped as the spec shows."""
    base = stack.url("reporter") + "/open311/v2"
    disco = httpx.get(f"{base}/discovery.json").json()
    assert disco["endpoints"][0]["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert disco["endpoints"][0]["formats"] == ["text/xml", "application/json"]
    root = xml_of(httpx.get(f"{base}/discovery.xml"))
    assert root.tag == "discovery" and root.find("endpoints/endpoint/formats/format").text == "text/xml"

    services = httpx.get(f"{base}/services.json").json()
    assert len(services) == 12
    manhole = next(s for s in services if s["service_code"] == "manhole_cover")
    assert manhole == {
        "service_code": "manhole_cover",
        "service_name": "井盖缺失或破损",
        "description": manhole["description"],
        "metadata": True,
        "type": "realtime",
        "keywords": manhole["keywords"],
        "group": manhole["group"],
    }
    root = xml_of(httpx.get(f"{base}/services.xml"))
    assert root.tag == "services" and len(root.findall("service")) == 12
    assert root.find("service/metadata").text == "true"

    definition = httpx.get(f"{base}/services/manhole_cover.json").json()
    assert definition["service_code"] == "manhole_cover"
    attr = definition["attributes"][0]
    assert attr["code"] == "danger_now" and attr["datatype"] == "singlevaluelist" and attr["variable"] is True
    root = xml_of(httpx.get(f"{base}/services/manhole_cover.xml"))
    assert (
        root.tag == "service_definition" and root.find("attributes/attribute/values/value/key").text == "yes"
    )

    missing = httpx.get(f"{base}/services/ufo.json")
    assert missing.status_code == 404
    assert missing.json() == [{"code": 404, "description": "service_code ufo was not found"}]
    root = xml_of(httpx.get(f"{base}/services/ufo.xml"))
    assert root.tag == "errors" and root.find("error/code").text == "404"
    assert httpx.get(f"{base}/services.yaml").status_code == 400
    assert httpx.get(f"{base}/services.json", params={"jurisdiction_id": "yinhang"}).status_code == 200
    assert httpx.get(f"{base}/services.json", params={"jurisdiction_id": "paris"}).status_code == 404


def test_open311_post_and_get_requests(stack: Stack, api_key: str) -> None:
    """POST requests as the spec's example (form fields, api_key); GET with filters; tokens; errors."""
    base = stack.url("reporter") + "/open311/v2"
    place = PLACES["yh-p12"]
    form = {
        "api_key": api_key,
        "service_code": "fire_lane_blocked",
        "lat": str(place.lat),
        "long": str(place.lon),
        "address_string": "殷行路 1 号",
        "email": "someone@example.org",
        "first_name": "张",
        "phone": "13800000000",
        "description": "消防通道被车堵住 <b>",
        "media_url": "http://example.org/photo.jpg",
        "attribute[danger_now]": "yes",
    }
    no_key = httpx.post(f"{base}/requests.json", data={k: v for k, v in form.items() if k != "api_key"})
    assert no_key.status_code == 403 and no_key.json()[0]["code"] == 403
    bad_key = httpx.post(f"{base}/requests.xml", data={**form, "api_key": "wrong"})
    assert bad_key.status_code == 403 and xml_of(bad_key).find("error/description").text
    unknown = httpx.post(f"{base}/requests.json", data={**form, "service_code": "ufo"})
    assert unknown.status_code == 404
    nowhere = {k: v for k, v in form.items() if k not in ("lat", "long", "address_string")}
    assert httpx.post(f"{base}/requests.json", data=nowhere).status_code == 400
    assert httpx.post(f"{base}/requests.json", data={**form, "description": "长" * 501}).status_code == 400

    before = received_count(stack.url("reporter"), "fire_lane_blocked", "open311")
    created = httpx.post(f"{base}/requests.json", data=form)
    assert created.status_code == 200, created.text
    [answer] = created.json()
    assert set(answer) == {"service_request_id", "service_notice", "account_id"}
    request_id = answer["service_request_id"]
    assert received_count(stack.url("reporter"), "fire_lane_blocked", "open311") == before + 1
    xml_created = httpx.post(
        f"{base}/requests.xml", data={**form, "address_string": "", "lat": str(place.lat)}
    )
    root = xml_of(xml_created)
    assert root.tag == "service_requests" and root.find("request/service_request_id").text
    address_only = {k: v for k, v in form.items() if k not in ("lat", "long")}
    assert httpx.post(f"{base}/requests.json", data=address_only).status_code == 200  # to triage

    case_of(stack.url("reporter"), request_id)
    [item] = httpx.get(f"{base}/requests/{request_id}.json").json()
    assert item["service_request_id"] == request_id and item["status"] == "open"
    assert item["service_code"] == "fire_lane_blocked" and item["service_name"] == "消防通道堵塞"
    assert item["agency_responsible"] == "闸殷网格站"
    assert item["expected_datetime"] and item["expected_datetime"] > item["requested_datetime"]
    assert item["lat"] == place.lat and item["long"] == place.lon
    assert item["media_url"] == "http://example.org/photo.jpg"
    assert "example.org" not in json.dumps({k: v for k, v in item.items() if k != "media_url"})
    assert "13800000000" not in json.dumps(item) and "张" not in json.dumps(item, ensure_ascii=False)
    root = xml_of(httpx.get(f"{base}/requests/{request_id}.xml"))
    assert root.tag == "service_requests" and len(root.findall("request")) == 1
    assert not root.find("request/description").text  # the public feed carries no rider words
    assert "消防通道被车堵住" not in json.dumps(item, ensure_ascii=False)
    assert httpx.get(f"{base}/requests/r_nope.json").json() == [
        {"code": 404, "description": "service_request_id r_nope was not found"}
    ]
    [token] = httpx.get(f"{base}/tokens/{request_id}.json").json()
    assert token == {"service_request_id": request_id, "token": request_id}
    assert httpx.get(f"{base}/tokens/zzz.json").status_code == 404

    listed = httpx.get(f"{base}/requests.json", params={"service_code": "fire_lane_blocked"}).json()
    assert request_id in {i["service_request_id"] for i in listed}
    assert {i["service_code"] for i in listed} == {"fire_lane_blocked"}
    assert request_id in {
        i["service_request_id"] for i in httpx.get(f"{base}/requests.json", params={"status": "open"}).json()
    }
    assert request_id not in {
        i["service_request_id"]
        for i in httpx.get(f"{base}/requests.json", params={"status": "closed"}).json()
    }
    past = {"start_date": "2010-01-01T00:00:00Z", "end_date": "2010-02-01T00:00:00Z"}
    assert httpx.get(f"{base}/requests.json", params=past).json() == []
    ids = httpx.get(f"{base}/requests.json", params={"service_request_id": f"{request_id},r_nope"}).json()
    assert [i["service_request_id"] for i in ids] == [request_id]
    bad = httpx.get(f"{base}/requests.json", params={"start_date": "yesterday"})
    assert bad.status_code == 400 and bad.json()[0]["code"] == 400
    assert httpx.get(f"{base}/requests.json", params={"status": "pending"}).status_code == 400

    case_id = case_of(stack.url("reporter"), request_id)
    publish_case_events(stack, case_id, [("closed", "closed", 40)], station_id="yh-s3")
    wait_for(
        lambda: httpx.get(f"{base}/requests/{request_id}.json").json()[0]["status"] == "closed",
        what="closed in Open311",
    )
    closed = httpx.get(f"{base}/requests.json", params={"status": "closed"}).json()
    assert request_id in {i["service_request_id"] for i in closed}
