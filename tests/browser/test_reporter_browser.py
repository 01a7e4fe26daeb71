"""The rider's pages in headless Chromium on a phone viewport, against the three services as processes.

Each test keeps screenshots under test-artifacts/ (reporter-*.png, the code sheet as a PDF).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gridloop.demo import DEMO_PLACES
from gridloop.stack import Stack
from schemas.reference import load_places
from tests.support.reporter import (
    LOOSE_LIMITS,
    case_of,
    make_jpeg,
    publish_case_events,
    report,
    status_of,
)
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.kafka, pytest.mark.slow]
PLACES = {p.place_id: p for p in load_places(DEMO_PLACES)}


def wait_js(page: Any, expression: str, timeout: float = 20.0) -> None:
    """Poll a JavaScript expression until it is true (the pages' CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {expression}")
        page.wait_for_timeout(100)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack for the browser tests."""
    prefix = f"rb{uuid.uuid4().hex[:6]}."
    settings = stack_settings(tmp_path_factory.mktemp("rider-browser"), kafka_bootstrap, prefix)
    s = start_stack(settings, "external", True, **LOOSE_LIMITS)
    yield s
    s.stop()


def shot(page: Any, artifacts: Path, name: str) -> None:
    """Keep a full-page screenshot as evidence."""
    page.screenshot(path=str(artifacts / f"reporter-{name}.png"), full_page=True)


def my_reports(context: Any, base: str) -> list[dict[str, Any]]:
    """The reports of the browser's rider cookie, asked with that cookie from outside the page."""
    cookies = {c["name"]: c["value"] for c in context.cookies(base)}
    items: list[dict[str, Any]] = httpx.get(f"{base}/api/v1/me/reports", cookies=cookies).json()["items"]
    return items


def test_scan_photo_send_receipt_tracking(stack: Stack, phone: Any, artifacts: Path, tmp_path: Path) -> None:
    """Scan → category → photo → words → send → receipt → tracking, in well under 30 s of tapping."""
    base = stack.url("reporter")
    place = PLACES["yh-p01"]
    photo = tmp_path / "camera.jpg"
    photo.write_bytes(make_jpeg(3000, 2250))
    page = phone.new_page()
    page.goto(f"{base}/r/{place.code}")
    assert page.inner_text("#place-name") == place.name_zh
    shot(page, artifacts, "01-scan-page")

    started = time.monotonic()
    page.locator("label.cat", has_text="井盖缺失或破损").click()
    page.set_input_files("#photo-input", str(photo))
    page.wait_for_selector("#thumbs img")
    page.fill("#description", "井盖破了一半 <script>alert(1)</script>")
    page.locator("#danger").check()
    shot(page, artifacts, "02-filled")
    page.click("#send")
    page.wait_for_selector("#receipt:not([hidden])")
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"reporting took {elapsed:.1f}s"
    report_id = page.inner_text("#receipt-id")
    assert report_id.startswith("r_")
    shot(page, artifacts, "03-receipt")

    page.click("#receipt-track")
    page.wait_for_url(f"**/t/{report_id}")
    case_of(base, report_id)
    page.reload()
    assert page.inner_text("#status") == "已受理，等待网格站签收"
    assert "已受理（立案）" in page.inner_text("#timeline")
    assert page.inner_text("#your-words") == "井盖破了一半 <script>alert(1)</script>"  # shown as text
    src = page.get_attribute(".thumbs img", "src")
    assert src and src.startswith("/api/v1/photos/")
    import io

    from PIL import Image

    stored = Image.open(io.BytesIO(httpx.get(base + src).content))
    assert max(stored.size) <= 1280  # downscaled on the phone before upload
    assert not stored.getexif()
    shot(page, artifacts, "04-tracking")
    [mine] = my_reports(phone, base)
    assert mine["report_id"] == report_id


def test_plus_one_joins_the_open_case(stack: Stack, phone: Any, artifacts: Path) -> None:
    """An open case at the place is offered; one tap on +1 adds the rider to it."""
    base = stack.url("reporter")
    place = PLACES["yh-p06"]
    first = report(base, place.code, "facility_damage", description="路灯不亮")
    case_id = case_of(base, first.json()["report_id"])
    page = phone.new_page()
    page.goto(f"{base}/r/{place.code}")
    row = page.locator(f".case-row[data-case='{case_id}']")
    assert "公共设施损坏" in row.inner_text() and "路灯不亮" not in page.content()
    shot(page, artifacts, "05-plus-one-offered")
    row.locator(".plus1").click()
    page.wait_for_selector("#receipt:not([hidden])")
    report_id = page.inner_text("#receipt-id")
    shot(page, artifacts, "06-plus-one-receipt")
    assert case_of(base, report_id) == case_id


def test_offline_report_is_kept_and_sent_when_back_online(stack: Stack, phone: Any, artifacts: Path) -> None:
    """No network: the page says the report is kept on the phone; back online, it is sent once."""
    base = stack.url("reporter")
    place = PLACES["yh-p11"]
    page = phone.new_page()
    page.goto(f"{base}/r/{place.code}")
    phone.set_offline(True)
    page.locator("label.cat", has_text="环境卫生").click()
    page.fill("#description", "垃圾满了")
    page.click("#send")
    wait_js(page, "document.getElementById('msg').textContent.includes('没有网络')")
    assert "联网后会自动发送" in page.inner_text("#msg")
    assert page.evaluate("JSON.parse(localStorage.getItem('gl_outbox')).length") == 1
    assert page.is_visible("#pending")
    shot(page, artifacts, "07-offline-kept")
    assert my_reports(phone, base) == []  # nothing reached the server

    phone.set_offline(False)
    page.wait_for_selector("#receipt:not([hidden])", timeout=30_000)
    assert page.evaluate("JSON.parse(localStorage.getItem('gl_outbox') || '[]').length") == 0
    shot(page, artifacts, "08-back-online-sent")
    sent = my_reports(phone, base)
    assert len(sent) == 1 and sent[0]["report_id"] == page.inner_text("#receipt-id")

    # a double tap (the second tap racing the first) still makes one report
    page.goto(f"{base}/r/{place.code}")
    page.locator("label.cat", has_text="其他").click()
    page.evaluate(
        "() => { const b = document.getElementById('send'); b.click(); b.disabled = false; b.click(); }"
    )
    page.wait_for_selector("#receipt:not([hidden])")
    page.wait_for_timeout(500)
    assert len(my_reports(phone, base)) == 2


def test_confirm_and_deny(stack: Stack, phone: Any, artifacts: Path) -> None:
    """Resolved: the after-photo and the closing step; deny needs a comment; then confirm with stars."""
    base = stack.url("reporter")
    place = PLACES["yh-p13"]
    page = phone.new_page()
    page.goto(f"{base}/r/{place.code}")
    page.locator("label.cat", has_text="电动车飞线充电").click()
    page.click("#send")
    page.wait_for_selector("#receipt:not([hidden])")
    report_id = page.inner_text("#receipt-id")
    case_id = case_of(base, report_id)
    publish_case_events(
        stack,
        case_id,
        [("acknowledged", "acknowledged", 2), ("dispatched", "dispatched", 3), ("resolved", "resolved", 4)],
        station_id="yh-s3",
        after_photo_ids=["after-1"],
        note="飞线已拆除",
    )
    wait_for(lambda: status_of(base, report_id) == "resolved", what="resolved")
    page.goto(f"{base}/t/{report_id}")
    assert page.inner_text("#status") == "已办结，请您确认"
    after_url = f"{stack.settings.closer_public_url}/photos/after-1.jpg"
    assert f'src="{after_url}"' in httpx.get(f"{base}/t/{report_id}").text
    # this closer does not serve that photo: the page drops the broken image instead of showing it
    wait_js(page, "!document.querySelector('.after') || document.querySelector('.after').hidden")
    for step in ("网格站已签收", "已派人处置", "已办结", "飞线已拆除"):
        assert step in page.inner_text("#timeline")
    shot(page, artifacts, "09-resolved-asks")

    page.click("#fixed-no")
    assert "请写明原因" in page.inner_text("#fb-msg")
    page.fill("#fb-comment", "楼道里还有线")
    page.locator(".rating label").nth(1).click()
    page.click("#fixed-no")
    page.wait_for_selector("#feedback-done")
    assert "没修好" in page.inner_text("#feedback-done") and "楼道里还有线" in page.inner_text(
        "#feedback-done"
    )
    assert "您反馈没修好" in page.inner_text("#timeline")
    shot(page, artifacts, "10-denied")

    publish_case_events(
        stack, case_id, [("reopened", "dispatched", 5), ("resolved", "resolved", 6)], station_id="yh-s3"
    )
    wait_for(
        lambda: (
            httpx.get(f"{base}/api/v1/reports/{report_id}").json()["timeline"][-1]["action"] == "resolved"
        ),
        what="resolved again",
    )
    # where the closer serves the after-photo, the rider sees it
    after_jpeg = make_jpeg(600, 400, gps=False)
    page.route(f"{after_url}*", lambda route: route.fulfill(body=after_jpeg, content_type="image/jpeg"))
    page.reload()
    wait_js(page, "(document.querySelector('.after-photo') || {}).naturalWidth === 600")
    assert page.is_visible(".after-photo")
    page.locator(".rating label").nth(4).click()
    page.click("#fixed-yes")
    page.wait_for_selector("#feedback-done")
    assert "已修好" in page.inner_text("#feedback-done") and "★★★★★" in page.inner_text("#feedback-done")
    shot(page, artifacts, "11-confirmed")
    publish_case_events(stack, case_id, [("closed", "closed", 7)], station_id="yh-s3")
    wait_for(lambda: status_of(base, report_id) == "closed", what="closed")
    page.reload()
    assert page.inner_text("#status") == "已结案"
    shot(page, artifacts, "12-closed")


def test_english_switch(stack: Stack, phone: Any, artifacts: Path) -> None:
    """Chinese by default; one tap switches to English, which sticks across pages; and back."""
    base = stack.url("reporter")
    page = phone.new_page()
    page.goto(f"{base}/r/{PLACES['yh-p16'].code}")
    assert page.inner_text("h2") == "遇到什么问题？"
    page.click("#lang-switch")
    page.wait_for_url("**lang=en")
    assert page.inner_text("#report h2") == "What is wrong?"
    assert "Missing or broken manhole cover" in page.inner_text(".cats")
    assert page.get_attribute("html", "lang") == "en"
    shot(page, artifacts, "13-english")
    page.goto(f"{base}/my")
    assert page.inner_text("h1") == "My reports"
    page.click("#lang-switch")
    assert page.inner_text("h1") == "我的报告"


def test_deactivated_code_and_gps_fallback(stack: Stack, phone: Any, artifacts: Path) -> None:
    """A deactivated code shows a clear page; 'use my location' reports by GPS to the grid's station."""
    base = stack.url("reporter")
    admin = {"Authorization": f"Bearer {staff_token(stack.url('closer'), 'admin')}"}
    code = PLACES["yh-p17"].code
    assert httpx.post(f"{base}/api/v1/codes/{code}/deactivate", headers=admin).status_code == 200
    page = phone.new_page()
    response = page.goto(f"{base}/r/{code}")
    assert response is not None and response.status == 410
    assert page.inner_text("#problem h1") == "这个报告码已停用"
    shot(page, artifacts, "14-deactivated")

    spot = PLACES["yh-p07"]  # in yh-g2
    phone.grant_permissions(["geolocation"], origin=base)
    phone.set_geolocation({"latitude": spot.lat, "longitude": spot.lon})
    page.click("#locate")
    wait_js(page, "document.getElementById('located').textContent.includes('国和网格站')")
    page.locator("label.cat", has_text="小区进门难").click()
    shot(page, artifacts, "15-gps")
    page.click("#send")
    page.wait_for_selector("#receipt:not([hidden])")
    report_id = page.inner_text("#receipt-id")
    case_of(base, report_id)
    assert httpx.get(f"{base}/api/v1/reports/{report_id}").json()["station_id"] == "yh-s2"


def test_code_sheet_prints_on_a4(stack: Stack, browser: Any, artifacts: Path) -> None:
    """The station's sheet renders in Chromium and prints to A4 pages, four codes a page."""
    base = stack.url("reporter")
    token = staff_token(stack.url("closer"), "admin")
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {token}"})
    try:
        page = context.new_page()
        page.goto(f"{base}/api/v1/stations/yh-s4/codes/sheet")
        cards = page.locator(".card")
        count = cards.count()
        assert count >= 5
        for i in range(count):
            card = cards.nth(i)
            assert card.locator("svg").count() == 1
            assert re.fullmatch(r"[2-9A-Y]{4}-[2-9A-Y]{4}", card.locator(".code").inner_text())
        assert "市光一村东门" in page.inner_text(".sheet") and "市光网格站" in page.inner_text(".sheet")
        page.screenshot(path=str(artifacts / "reporter-16-code-sheet.png"), full_page=True)
        pdf = page.pdf(format="A4", print_background=True)
        (artifacts / "reporter-code-sheet-yh-s4.pdf").write_bytes(pdf)
        assert pdf.startswith(b"%PDF")
        pages = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
        assert pages == math.ceil(count / 4), (pages, count)
        sizes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([0-9.]+) ([0-9.]+)\s*\]", pdf)
        assert sizes and all(abs(float(w) - 595) < 2 and abs(float(h) - 842) < 2 for w, h in sizes)
    finally:
        context.close()
