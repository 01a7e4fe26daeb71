"""The conversation in headless Chromium on a phone viewport, against the three services as processes:
a public update staff write in the closer shows on the rider's tracking page, the rider answers a
question (words and a photo) and nudges (催办) once; the closer gets both.

Screenshots under test-artifacts/ (conversation-*.png).
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
from tests.support.reporter import LOOSE_LIMITS, case_of, make_jpeg
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.kafka, pytest.mark.slow]
PLACES = {p.place_id: p for p in load_places(DEMO_PLACES)}


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One embedded stack for these tests."""
    prefix = f"cb{uuid.uuid4().hex[:6]}."
    settings = stack_settings(tmp_path_factory.mktemp("conversation-browser"), kafka_bootstrap, prefix)
    s = start_stack(settings, "external", True, **LOOSE_LIMITS)
    yield s
    s.stop()


def test_update_question_reply_and_nudge_on_the_phone(
    stack: Stack, phone: Any, artifacts: Path, tmp_path: Path
) -> None:
    """Staff publish an update and ask; the rider's page shows both (escaped), the rider answers with
    words and a photo, then nudges; the closer lists the reply and puts the case on supervision."""
    reporter, closer = stack.url("reporter"), stack.url("closer")
    place = PLACES["yh-p01"]
    page = phone.new_page()
    page.goto(f"{reporter}/r/{place.code}")
    page.locator("label.cat").first.click()
    page.click("#send")
    page.wait_for_selector("#receipt:not([hidden])")
    report_id = page.inner_text("#receipt-id")
    case_id = case_of(reporter, report_id, timeout=60)
    station_id = httpx.get(f"{reporter}/api/v1/reports/{report_id}").json()["station_id"]
    staff = {"Authorization": f"Bearer {staff_token(closer, 'yh-centre')}"}

    def say(kind: str, words: str) -> int:
        version = httpx.get(f"{closer}/api/v1/cases/{case_id}", headers=staff).json()["version"]
        r = httpx.post(
            f"{closer}/api/v1/cases/{case_id}/messages",
            json={"kind": kind, "text": words, "version": version},
            headers=staff,
        )
        assert r.status_code == 201, r.text
        return int(r.json()["message"]["id"])

    say("public", "已联系养护单位，<b>明天</b>更换")
    question = say("question", "是北门还是南门？请拍张照片")
    wait_for(
        lambda: len(httpx.get(f"{reporter}/api/v1/reports/{report_id}").json()["updates"]) == 2,
        timeout=60,
        every=0.3,
        what="the update and the question on the tracking view",
    )
    page.goto(f"{reporter}/t/{report_id}")
    updates = page.locator("#updates li")
    assert updates.count() == 2
    assert "已联系养护单位，<b>明天</b>更换" in updates.nth(0).inner_text()  # shown as typed, not as HTML
    assert page.locator("#updates b", has_text="明天").count() == 0
    assert "是北门还是南门？请拍张照片" in updates.nth(1).inner_text()
    assert updates.nth(1).get_attribute("data-kind") == "question"
    page.screenshot(path=str(artifacts / "conversation-1-update-and-question.png"), full_page=True)

    photo = tmp_path / "north.jpg"
    photo.write_bytes(make_jpeg(1200, 900))
    page.fill("#reply-text", "北门")
    page.set_input_files("#reply-photo", str(photo))
    page.click("#reply-send")
    page.wait_for_selector("#replies li")
    assert "北门" in page.inner_text("#replies") and page.locator("#replies img.thumb").count() == 1

    page.click("#nudge-btn")
    page.wait_for_selector("#nudge-msg.ok")
    assert "已催办" in page.inner_text("#nudge-msg")
    page.screenshot(path=str(artifacts / "conversation-2-replied-and-nudged.png"), full_page=True)
    page.reload()
    assert page.locator("#nudge-btn").is_disabled()  # the next nudge is tomorrow

    def in_closer() -> dict[str, Any] | None:
        detail = httpx.get(f"{closer}/api/v1/cases/{case_id}", headers=staff).json()
        kinds = [m["kind"] for m in detail["messages"]]
        return detail if "reply" in kinds and "nudge" in kinds else None

    detail = wait_for(in_closer, timeout=60, every=0.3, what="the reply and the nudge in the closer")
    reply = next(m for m in detail["messages"] if m["kind"] == "reply")
    assert (reply["text"], reply["question_id"], len(reply["photo_urls"])) == ("北门", question, 1)
    assert httpx.get(reply["photo_urls"][0]).headers["content-type"] == "image/jpeg"
    assert detail["supervised"] is True and detail["nudges"] == 1 and detail["station_id"] == station_id
