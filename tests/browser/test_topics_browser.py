"""A topic (议题) from suggestion to closed in headless Chromium on phones, against the services as
processes: a rider reports piled-up bikes at the metro exit, three more riders report around it (the
demo's hot spot), the 殷行 centre opens the suggestion as a topic in the console, records the meeting
and closes it as fixed; the first rider's tracking page then shows the outcome and asks to confirm.

Screenshots under test-artifacts/ (topics-*.png).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gridloop import hotspot
from gridloop.demo import DEMO_PASSWORD, DEMO_PLACES
from gridloop.stack import Stack
from schemas.reference import load_places
from tests.support.browser import PHONE
from tests.support.reporter import LOOSE_LIMITS, case_of
from tests.support.stacks import stack_settings, start_stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.kafka, pytest.mark.slow]
METRO_EXIT = next(p for p in load_places(DEMO_PLACES) if p.place_id == "yh-p21")
OUTCOME = "地铁口已划定停放区，企业每日两次清运"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack for these tests."""
    prefix = f"tb{uuid.uuid4().hex[:6]}."
    settings = stack_settings(tmp_path_factory.mktemp("topics-browser"), kafka_bootstrap, prefix)
    s = start_stack(settings, "external", True, **LOOSE_LIMITS)
    yield s
    s.stop()


def test_a_topic_from_suggestion_to_closed_on_phones(
    stack: Stack, browser: Any, phone: Any, artifacts: Path
) -> None:
    """The rider's report and the hot spot make one suggestion of four cases; the centre works it to
    closed on a phone; the rider sees the outcome on the tracking page."""
    reporter, closer = stack.url("reporter"), stack.url("closer")
    rider = phone.new_page()
    rider.goto(f"{reporter}/r/{METRO_EXIT.code}")
    rider.locator('label.cat:has(input[value="shared_bikes"])').click()
    rider.click("#send")
    rider.wait_for_selector("#receipt:not([hidden])")
    report_id = rider.inner_text("#receipt-id")
    mine = case_of(reporter, report_id, timeout=60)
    others = [case_of(reporter, rid, timeout=60) for rid in hotspot.send(reporter)]
    cases = set([mine, *others])
    assert len(cases) == 4  # the hot spot's first report is at the exit too: merged into the rider's case

    centre_ctx = browser.new_context(**PHONE)  # the centre's supervisor on a phone too
    try:
        centre = centre_ctx.new_page()
        centre.goto(f"{closer}/console")
        centre.fill('input[name="username"]', "yh-centre")
        centre.fill('input[name="password"]', DEMO_PASSWORD)
        centre.click('button[type="submit"]')
        centre.wait_for_url("**/console/queue**")

        def suggested() -> bool:
            centre.goto(f"{closer}/console/topics")
            return centre.locator('.suggestion[data-cases="4"]').count() == 1

        wait_for(suggested, timeout=60, every=0.5, what="the suggestion on the console")
        centre.screenshot(path=str(artifacts / "topics-1-suggestion.png"), full_page=True)
        suggestion = centre.locator('.suggestion[data-cases="4"]')
        suggestion.locator('input[name="title"]').fill("地铁市光路站共享单车堆积")
        suggestion.locator('button[type="submit"]').click()
        centre.wait_for_url("**/console/topics/T*")
        assert centre.locator(".map-case").count() == 4
        assert centre.locator("tr[data-case]").count() == 4

        centre.fill('#meeting-form input[name="held_on"]', "2026-11-25")
        centre.fill('#meeting-form textarea[name="participants"]', "街区治理委员会、美团、哈啰、商户代表")
        centre.fill('#meeting-form textarea[name="decision"]', "划定停放区，企业每日清运")
        centre.fill('#meeting-form input[name="follow_up_owner"]', "市容所")
        centre.click('#meeting-form button[type="submit"]')
        centre.wait_for_selector("#done")
        assert centre.locator("#meetings .meeting").count() == 1

        centre.fill('#close-form textarea[name="outcome"]', OUTCOME)
        centre.click('#close-form button[type="submit"]')
        centre.wait_for_selector('#topic-status[data-status="closed"]')
        assert centre.inner_text("#topic-outcome") == OUTCOME
        assert centre.locator('tr[data-status="resolved"]').count() == 4
        centre.screenshot(path=str(artifacts / "topics-2-closed.png"), full_page=True)
    finally:
        centre_ctx.close()

    def outcome_shown() -> bool:
        view = httpx.get(f"{reporter}/api/v1/reports/{report_id}").json()
        return bool(view["topic"] and view["topic"]["outcome"] and view["status"] == "resolved")

    wait_for(outcome_shown, timeout=60, every=0.3, what="the outcome on the rider's tracking view")
    rider.goto(f"{reporter}/t/{report_id}")
    assert rider.locator("#topic-outcome").count() == 1
    assert OUTCOME in rider.inner_text("#topic-outcome")
    assert "划定停放区，企业每日清运" in rider.inner_text("#topic")
    assert "美团、哈啰" not in rider.content()  # the participants stay in the closer
    assert rider.locator("#feedback").count() == 1  # resolved: the rider is asked to confirm
    rider.screenshot(path=str(artifacts / "topics-3-rider.png"), full_page=True)
