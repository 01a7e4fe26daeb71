"""The staff and supervisor console in headless Chromium, on a tablet viewport, against real processes.

Screenshots land in the artifacts directory (test-artifacts/closer-*.png).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from gridloop.demo import DEMO_PASSWORD, DEMO_PLACES
from schemas.reference import load_places
from tests.support.clocked import ClockedStack, report, start_clocked_stack
from tests.support.stacks import stack_settings, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.kafka, pytest.mark.slow]
PLACES = load_places(DEMO_PLACES)
TABLET: dict[str, Any] = {
    "viewport": {"width": 1180, "height": 820},
    "has_touch": True,
    "locale": "zh-CN",
    "timezone_id": "Asia/Shanghai",
}


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClockedStack]:
    """The three services; the closer on a movable clock."""
    prefix = f"cb{uuid.uuid4().hex[:6]}."
    settings = stack_settings(tmp_path_factory.mktemp("closer-browser"), kafka_bootstrap, prefix)
    s = start_clocked_stack(settings, GRIDLOOP_SCHEDULER_INTERVAL_SECONDS="0.5")
    yield s
    s.stop()


@pytest.fixture
def tablet(browser: Any) -> Iterator[Any]:
    """A fresh tablet-sized context (own cookies)."""
    context = browser.new_context(**TABLET)
    context.set_default_timeout(30_000)
    try:
        yield context
    finally:
        context.close()


def shot(page: Any, artifacts: Path, name: str) -> None:
    """Keep a full-page screenshot as evidence."""
    page.screenshot(path=str(artifacts / f"closer-{name}.png"), full_page=True)


def sign_in(context: Any, stack: ClockedStack, username: str) -> Any:
    """Open the console and sign in; returns the page on the queue."""
    page = context.new_page()
    page.goto(f"{stack.url('closer')}/console")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', DEMO_PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url("**/console/queue**")
    return page


def take(page: Any, action: str, **fields: str) -> None:
    """Open an action's confirm box, fill it and confirm."""
    box = page.locator(f'details[data-action="{action}"]')
    box.locator("summary").click()
    for name, value in fields.items():
        field = box.locator(f'[name="{name}"]')
        if name == "photo":
            field.set_input_files(value)
        elif field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    box.locator('button[type="submit"]').click()
    page.wait_for_url(f"**done={action}")


def test_sign_in_live_queue_and_work_a_case_to_resolved(
    stack: ClockedStack, tablet: Any, artifacts: Path, tmp_path: Path
) -> None:
    """Sign in, a new case appears without a reload, sign for, dispatch, resolve with an after-photo."""
    page = sign_in(tablet, stack, "yh-s1")
    session = next(c for c in tablet.cookies() if c["name"] == "gl_session")
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    page.locator("#live").wait_for(state="visible")
    shot(page, artifacts, "01-queue-empty")

    # a working-time category: an urgent manhole case at night would also go to the duty roster (a
    # step more on its timeline, tests/db/test_closer_duty.py), and this test runs at any hour
    marker = f"护栏损坏 {uuid.uuid4().hex[:6]}"
    report(stack, "yh-g1", "facility_damage", marker)
    row = page.locator("#rows tr.row", has_text=marker)
    row.wait_for(timeout=60_000)  # arrives over the server-sent events, no reload
    assert "green" in (row.get_attribute("class") or "")
    shot(page, artifacts, "02-queue-live-new-case")

    row.locator("a.case-link").click()
    page.wait_for_url("**/console/cases/**")
    assert page.locator("svg.map polygon").count() == 1 and page.locator("svg.map circle").count() == 2
    assert page.locator("details.action").count() == 3  # acknowledge, return, transfer only
    take(page, "acknowledge")
    take(page, "dispatch", assignee="王师傅", note="带新护栏")
    photo = tmp_path / "after.jpg"
    Image.new("RGB", (640, 480), (90, 140, 60)).save(photo, "JPEG")
    take(page, "resolve", photo=str(photo), note="已更换护栏")
    assert page.locator("#case-status").inner_text() == "已办结"
    img = page.locator('.photos img[src^="/photos/"]')
    assert img.count() == 1 and img.evaluate("i => i.complete && i.naturalWidth") == 640
    assert page.locator(".timeline li").count() == 4
    shot(page, artifacts, "03-case-resolved-with-photo")


def test_return_then_the_supervisor_reassigns_and_supervises(
    stack: ClockedStack,
    browser: Any,
    artifacts: Path,
) -> None:
    """Staff return a case with a reason; the centre reassigns it; overdue, it is red in 督办."""
    staff_ctx = browser.new_context(**TABLET)
    centre_ctx = browser.new_context(**TABLET)
    try:
        staff = sign_in(staff_ctx, stack, "yh-s2")
        staff.locator("#live").wait_for(state="visible")
        marker = f"共享单车堆积 {uuid.uuid4().hex[:6]}"
        report(stack, "yh-g2", "shared_bikes", marker)
        staff.locator("#rows tr.row", has_text=marker).wait_for(timeout=60_000)
        staff.locator("#rows tr.row", has_text=marker).locator("a.case-link").click()
        case_url = staff.url
        take(staff, "return", reason="wrong_area", note="在市光路一侧,不属本网格")
        assert staff.locator("#case-status").inner_text() == "已退单"
        shot(staff, artifacts, "04-staff-returned")

        centre = sign_in(centre_ctx, stack, "yh-centre")
        centre.goto(f"{stack.url('closer')}/console/queue?view=returns")
        centre.locator("#rows tr.row", has_text=marker).wait_for()
        shot(centre, artifacts, "05-centre-returns-to-rule")
        centre.goto(case_url)
        take(centre, "reassign", to_station="yh-s4", note="属市光网格")
        assert centre.locator("#case-status").inner_text() == "待签收"
        assert "yh-s2 → yh-s4" in centre.locator(".timeline").inner_text()

        # the case is overdue: red, escalated, in the supervision list
        due = datetime.fromisoformat(httpx_case(stack, centre_ctx, case_url)["due_at"])
        stack.set_clock(due + timedelta(minutes=5))
        centre = sign_in(centre_ctx, stack, "yh-centre")  # the session lives on the closer's clock
        # the scheduler escalates on its next tick; on a loaded machine that can lag the page load
        wait_for(
            lambda: httpx_case(stack, centre_ctx, case_url)["supervised"],
            timeout=60,
            what="the scheduler's escalation",
        )
        centre.goto(f"{stack.url('closer')}/console/queue?view=supervision")
        row = centre.locator("#rows tr.row", has_text=marker)
        row.wait_for()
        assert "red" in (row.get_attribute("class") or "") and "督办" in row.inner_text()
        shot(centre, artifacts, "06-centre-supervision-red")
    finally:
        stack.set_clock(datetime.now(UTC))
        staff_ctx.close()
        centre_ctx.close()


def httpx_case(stack: ClockedStack, context: Any, case_url: str) -> dict[str, Any]:
    """The case's JSON, read with the browser's session cookie (GET accepts the console cookie)."""
    case_id = case_url.rstrip("/").rsplit("/", 1)[1].split("?")[0]
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    r = httpx.get(f"{stack.url('closer')}/api/v1/cases/{case_id}", cookies=cookies)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def test_bulk_sign_for_keyboard_and_english(stack: ClockedStack, tablet: Any, artifacts: Path) -> None:
    """Select all new cases and sign for them at once; j moves by keyboard; the English switch."""
    markers = [f"卫生 {uuid.uuid4().hex[:6]}" for _ in range(2)]
    # two categories: the same category at the same place would merge into one case
    for m, category in zip(markers, ("sanitation", "other"), strict=True):
        report(stack, "yh-g5", category, m)
    page = sign_in(tablet, stack, "yh-s5")
    for m in markers:
        page.locator("#rows tr.row", has_text=m).wait_for(timeout=60_000)
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.classList.contains('case-link')")
    page.check("#select-new")
    page.locator("#bulk summary").click()
    page.click("#bulk-confirm")
    page.wait_for_url("**acked=**")
    assert "✓" in page.locator("p.ok").inner_text()
    for m in markers:
        assert "已签收" in page.locator("#rows tr.row", has_text=m).inner_text()
    page.goto(f"{stack.url('closer')}/console/queue?status=acknowledged")
    for m in markers:
        page.locator("#rows tr.row", has_text=m).wait_for()
    shot(page, artifacts, "07-bulk-signed-for")
    page.click("a.lang")
    page.wait_for_load_state()
    assert page.locator("nav a[aria-current=page]").inner_text() == "Queue"
    shot(page, artifacts, "08-english")
