"""Riders recognised in headless Chromium on a phone viewport, against the three services as
processes: a rider reports with their platform and rider number, confirms the fix, the station
thanks the riders; the tracking page shows the thank-you and /my the rider's contributions and
recognition code, and the rider number shows nowhere.

Screenshots under test-artifacts/ (riders-*.png).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gridloop.demo import DEMO_PLACES
from gridloop.stack import Stack
from schemas.reference import load_places
from tests.support.reporter import LOOSE_LIMITS, case_of, status_of
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.kafka, pytest.mark.slow]
PLACES = {p.place_id: p for p in load_places(DEMO_PLACES)}
NUMBER = "MT-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack for these tests."""
    prefix = f"rb{uuid.uuid4().hex[:6]}."
    settings = stack_settings(tmp_path_factory.mktemp("riders-browser"), kafka_bootstrap, prefix)
    s = start_stack(settings, "external", True, **LOOSE_LIMITS)
    yield s
    s.stop()


def test_my_contributions_and_the_thank_you_on_the_phone(stack: Stack, phone: Any, artifacts: Path) -> None:
    """Report (with a rider number), fixed and confirmed, thanked: the phone's tracking page shows
    the thank-you, /my counts 1 report, 1 fixed, 1 thank-you and shows the recognition code."""
    reporter, closer = stack.url("reporter"), stack.url("closer")
    place = PLACES["yh-p01"]
    page = phone.new_page()
    page.goto(f"{reporter}/r/{place.code}")
    page.locator("label.cat", has_text="小区进门难").click()
    page.click("details.more summary")
    page.select_option("select[name=platform]", "美团")
    page.fill("input[name=rider_no]", NUMBER)
    page.click("#send")
    page.wait_for_selector("#receipt:not([hidden])")
    report_id = page.inner_text("#receipt-id")
    case_id = case_of(reporter, report_id, timeout=60)
    station_id = httpx.get(f"{reporter}/api/v1/reports/{report_id}").json()["station_id"]
    staff = {"Authorization": f"Bearer {staff_token(closer, station_id)}"}
    for action, extra in (
        ("acknowledge", {}),
        ("dispatch", {"assignee": "物业王师傅"}),
        ("resolve", {"note": "门禁已修好"}),
    ):
        version = httpx.get(f"{closer}/api/v1/cases/{case_id}", headers=staff).json()["version"]
        r = httpx.post(
            f"{closer}/api/v1/cases/{case_id}/transitions",
            json={"action": action, "version": version, **extra},
            headers=staff,
        )
        assert r.status_code == 200, r.text
    wait_for(lambda: status_of(reporter, report_id) == "resolved", timeout=60, what="resolved")
    page.goto(f"{reporter}/t/{report_id}")
    page.click("#fixed-yes")
    page.wait_for_selector("#feedback-done")
    wait_for(lambda: status_of(reporter, report_id) == "closed", timeout=60, what="closed by the rider")

    thanks = {"preset": "safety", "text": "谢谢您帮邻居们反映门禁问题"}
    sent = httpx.post(f"{closer}/api/v1/cases/{case_id}/thanks", json=thanks, headers=staff)
    assert sent.status_code == 201, sent.text

    def thanked() -> bool:
        page.goto(f"{reporter}/t/{report_id}")
        return page.locator("#thanks").count() == 1

    wait_for(thanked, timeout=60, every=0.5, what="the thank-you on the tracking page")
    assert page.inner_text("#thanks-message") == "感谢您守护街道安全，您是我们的流动网格员！"
    assert page.inner_text("#thanks-text") == "谢谢您帮邻居们反映门禁问题"
    assert page.inner_text("#status") == "已结案"
    assert NUMBER not in page.content()
    page.screenshot(path=str(artifacts / "riders-1-thanked.png"), full_page=True)

    page.goto(f"{reporter}/my")
    counts = [page.inner_text(f"#n-{k}") for k in ("reports", "fixed", "thanks")]
    assert counts == ["1", "1", "1"]
    code = page.inner_text("#recognition")
    assert len(code) == 6 and all(c in "0123456789abcdef" for c in code)
    assert page.locator("#my-list li").count() == 1 and NUMBER not in page.content()
    assert page.is_visible("#contributions")
    page.screenshot(path=str(artifacts / "riders-2-my.png"), full_page=True)
