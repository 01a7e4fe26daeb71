"""The closer end to end: three real processes on Apache Kafka, the closer on a clock the test moves.

A staff member sees a rider's report arrive live, works it to resolved with a photo, the rider
confirms over Kafka and the case closes; an untouched case turns yellow, then red, is escalated
once, shows in the supervision list, and stays escalated once across a kill -9 of the closer.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from PIL import Image

from gridloop.demo import DEMO_PLACES
from schemas.events import ReportFeedback
from schemas.reference import load_places
from tests.support.clocked import ClockedStack, SseReader, publish, report, start_clocked_stack
from tests.support.stacks import stack_settings, staff_token, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PLACES = load_places(DEMO_PLACES)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClockedStack]:
    """The three services on the session's Kafka; the closer's scheduler ticks fast."""
    prefix = f"cl{uuid.uuid4().hex[:6]}."
    settings = stack_settings(tmp_path_factory.mktemp("closer-e2e"), kafka_bootstrap, prefix)
    s = start_clocked_stack(
        settings, GRIDLOOP_SCHEDULER_INTERVAL_SECONDS="0.3", GRIDLOOP_GAUGE_INTERVAL_SECONDS="1"
    )
    yield s
    s.stop()


def photo() -> bytes:
    """A small real JPEG."""
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (40, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def act(closer: str, auth: dict[str, str], case_id: str, action: str, **fields: Any) -> httpx.Response:
    """One transition at the case's current version."""
    version = httpx.get(f"{closer}/api/v1/cases/{case_id}", headers=auth).json()["version"]
    return httpx.post(
        f"{closer}/api/v1/cases/{case_id}/transitions",
        json={"action": action, "version": version, **fields},
        headers=auth,
        timeout=30,
    )


def test_report_arrives_live_is_worked_to_resolved_and_the_rider_closes_it(stack: ClockedStack) -> None:
    """The loop of the issue's 'done when', over real processes and Kafka."""
    closer = stack.url("closer")
    auth = {"Authorization": f"Bearer {staff_token(closer, 'yh-s1')}"}
    live = SseReader(f"{closer}/api/v1/queue/stream", auth)
    try:
        live.wait(lambda name, _d: name == "hello", timeout=30)
        report_id = report(stack, "yh-g1", "manhole_cover", "井盖松动,电动车经过很危险")
        opened = live.wait(lambda name, d: name == "change" and d["action"] == "opened", timeout=60)
    finally:
        live.close()
    case_id = opened["case_id"]
    case = httpx.get(f"{closer}/api/v1/cases/{case_id}", headers=auth).json()
    assert case["report_ids"] == [report_id] and case["status"] == "new"

    assert act(closer, auth, case_id, "acknowledge").status_code == 200
    assert act(closer, auth, case_id, "dispatch", assignee="王师傅").status_code == 200
    version = httpx.get(f"{closer}/api/v1/cases/{case_id}", headers=auth).json()["version"]
    r = httpx.post(
        f"{closer}/api/v1/cases/{case_id}/transitions",
        data={"action": "resolve", "version": str(version), "note": "已更换新井盖"},
        files={"photo": ("after.jpg", photo(), "image/jpeg")},
        headers=auth,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    photo_id = r.json()["after_photo_ids"][0]
    assert httpx.get(f"{closer}/photos/{photo_id}.jpg").status_code == 200

    publish(
        stack.bootstrap_servers,
        stack.settings.topic_prefix + "reports.feedback",
        case_id,
        "report.feedback",
        ReportFeedback(report_id=report_id, case_id=case_id, fixed=True, rating=5, at=datetime.now(UTC)),
    )

    def closed() -> dict[str, Any] | None:
        c = httpx.get(f"{closer}/api/v1/cases/{case_id}", headers=auth).json()
        return c if c["status"] == "closed" else None

    done = wait_for(closed, timeout=60, what="the case closed by the rider's confirmation")
    assert done["rating"] == 5
    assert [e["action"] for e in done["timeline"]][-1] == "confirm"
    metrics = httpx.get(f"{closer}/metrics").text
    for name in (
        'gridloop_case_transitions_total{action="resolve"}',
        "gridloop_case_ack_seconds_bucket",
        "gridloop_case_resolve_seconds_bucket",
    ):
        assert name in metrics


def test_two_staff_sign_for_one_case_at_once(stack: ClockedStack) -> None:
    """Two requests at the same version against the real service: one wins, one gets 409."""
    closer = stack.url("closer")
    auth = {"Authorization": f"Bearer {staff_token(closer, 'yh-s2')}"}
    marker = f"race-{uuid.uuid4().hex[:6]}"
    report(stack, "yh-g2", "sanitation", marker)

    def find() -> dict[str, Any] | None:
        items = httpx.get(f"{closer}/api/v1/queue", headers=auth, params={"limit": 200}).json()["items"]
        return next((c for c in items if c["description"] == marker), None)

    case = wait_for(find, timeout=60, what="the case in the queue")
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def sign() -> None:
        barrier.wait()
        r = httpx.post(
            f"{closer}/api/v1/cases/{case['case_id']}/transitions",
            json={"action": "acknowledge", "version": case["version"]},
            headers=auth,
            timeout=30,
        )
        codes.append(r.status_code)

    threads = [threading.Thread(target=sign) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [200, 409]


def test_untouched_case_turns_yellow_red_escalates_once_across_a_restart(stack: ClockedStack) -> None:
    """Move the closer's clock: yellow at 80 %, red and one escalation past the deadline; kill -9 and
    restart the closer past the deadline again: still exactly one escalation."""
    closer = stack.url("closer")
    s3 = {"Authorization": f"Bearer {staff_token(closer, 'yh-s3')}"}
    marker = f"untouched-{uuid.uuid4().hex[:6]}"
    report(stack, "yh-g3", "shared_bikes", marker)

    def mine() -> dict[str, Any] | None:
        items = httpx.get(f"{closer}/api/v1/queue", headers=s3, params={"limit": 200}).json()["items"]
        return next((c for c in items if c["description"] == marker), None)

    case = wait_for(mine, timeout=60, what="the case in yh-s3's queue")
    assert case["colour"] == "green"
    warn, due = datetime.fromisoformat(case["warn_at"]), datetime.fromisoformat(case["due_at"])

    stack.set_clock(warn + timedelta(minutes=1))
    s3 = {"Authorization": f"Bearer {staff_token(closer, 'yh-s3')}"}  # tokens live on the closer's clock
    assert wait_for(lambda: (c := mine()) and c["colour"] == "yellow", timeout=30, what="yellow")

    stack.set_clock(due + timedelta(minutes=1))
    centre = {"Authorization": f"Bearer {staff_token(closer, 'yh-centre')}"}

    def supervised() -> list[dict[str, Any]]:
        items = httpx.get(f"{closer}/api/v1/queue", params={"view": "supervision"}, headers=centre).json()[
            "items"
        ]
        return [c for c in items if c["case_id"] == case["case_id"]]

    row = wait_for(supervised, timeout=30, what="the case in the supervision list")[0]
    assert row["colour"] == "red" and row["supervised"]

    def escalations() -> list[dict[str, Any]]:
        timeline = httpx.get(f"{closer}/api/v1/cases/{case['case_id']}/timeline", headers=centre).json()
        return [e for e in timeline["timeline"] if e["action"] == "escalate"]

    assert [e["reason"] for e in escalations()] == ["ack"]
    stack.kill("closer")
    stack.set_clock(due + timedelta(hours=1))
    stack.restart("closer")
    centre = {"Authorization": f"Bearer {staff_token(closer, 'yh-centre')}"}
    wait_for(lambda: httpx.get(f"{closer}/readyz").status_code == 200, timeout=60, what="closer ready")
    # several scheduler ticks after the restart: nothing new for the same deadline
    wait_for(lambda: 'gridloop_cases_open{station="yh-s3"' in httpx.get(f"{closer}/metrics").text, timeout=30)
    assert [e["reason"] for e in escalations()] == ["ack"]
    stack.set_clock(datetime.now(UTC))
