"""The ops overview page, in Chromium, over a stack with simulated riders and staff."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gridloop.demo import DEMO_PASSWORD
from gridloop.simulate import simulate
from gridloop.stack import Stack
from tests.support.stacks import stack_settings, staff_token, start_stack, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.browser, pytest.mark.slow]
DESKTOP = {"viewport": {"width": 1280, "height": 900}, "locale": "zh-CN", "timezone_id": "Asia/Shanghai"}


@pytest.fixture(scope="module")
def busy_stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack that has seen a few seconds of rider traffic and staff work."""
    settings = stack_settings(
        tmp_path_factory.mktemp("overview"), kafka_bootstrap, f"ov{uuid.uuid4().hex[:6]}."
    )
    stack = start_stack(
        settings, GRIDLOOP_SCHEDULER_INTERVAL_SECONDS="1", GRIDLOOP_GAUGE_INTERVAL_SECONDS="1"
    )
    try:
        # in a thread: Playwright's sync API may own this thread's event loop later on
        result: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: result.update(
                tally=asyncio.run(
                    simulate(
                        stack.url("reporter"),
                        stack.url("closer"),
                        rate=15,
                        duration=6,
                        staff_every=1.5,
                        seed=11,
                    )
                )
            )
        )
        worker.start()
        worker.join(timeout=120)
        tally = result["tally"]
        assert sum(v for k, v in tally.sent.items() if k.endswith(":202")) > 50
        assert any(k.startswith("acknowledge:200") for k in tally.staff), tally.staff
        yield stack
    finally:
        stack.stop()


def test_overview_api_numbers(busy_stack: Stack) -> None:
    """The JSON overview counts today's reports, open cases per station, the map's grids, hot spots."""
    closer = busy_stack.url("closer")
    with httpx.Client(base_url=closer) as client:
        assert client.get("/api/v1/overview").status_code == 401  # signed-in staff only
    snap = _overview_json(closer)
    assert snap["today"]["reports"] > 50
    assert snap["open"] > 0 and sum(s["open"] for s in snap["stations"]) == snap["open"]
    assert sum(snap["open_by_grid"].values()) > 0
    assert snap["hot_spots"], "hot places should show as hot spots"
    assert len(snap["intake_by_hour"]) == 24 and sum(h["reports"] for h in snap["intake_by_hour"]) > 50
    metrics = httpx.get(closer + "/metrics").text
    assert 'gridloop_cases_open{station="yh-s' in metrics and "gridloop_cases_red{" in metrics


def _overview_json(closer: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {staff_token(closer, 'yh-centre')}"}
    answer = httpx.get(f"{closer}/api/v1/overview", headers=auth)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def test_overview_page_in_chromium_refreshes_live(busy_stack: Stack, browser: Any, artifacts: Path) -> None:
    """A supervisor opens /overview: tiles, station table with SLA colours, the grid map, charts;
    a new report raises today's count without a reload."""
    context = browser.new_context(**DESKTOP)
    context.set_default_timeout(30_000)
    try:
        page = context.new_page()
        closer = busy_stack.url("closer")
        page.goto(f"{closer}/console")
        page.fill('input[name="username"]', "yh-centre")
        page.fill('input[name="password"]', DEMO_PASSWORD)
        page.click('button[type="submit"]')
        page.wait_for_url("**/console/queue**")
        page.click('a[href="/overview"]')
        page.wait_for_selector("svg.gridmap")
        # 殷行's centre sees its own street only (street scoping, issue 17): one map, 殷行's 5 grids
        assert page.locator("figure.street").count() == 1
        assert page.locator("svg.gridmap polygon").count() == 5
        assert page.locator("table.stations tbody tr").count() >= 5
        assert page.locator("svg.chart rect").count() >= 24
        before = int(page.inner_text("#n-reports"))
        assert before > 50
        page.screenshot(path=str(artifacts / "overview-01-busy.png"), full_page=True)
        r = httpx.post(
            busy_stack.url("reporter") + "/api/v1/reports",
            json={"code": "W7Q23QVD", "category": "other", "description": "overview live"},
        )
        assert r.status_code == 202
        # the page's CSP forbids eval, so poll from here instead of wait_for_function
        wait_for(
            lambda: int(page.inner_text("#n-reports")) > before,
            timeout=40,
            every=0.5,
            what="today's count rising without a reload",
        )
        page.screenshot(path=str(artifacts / "overview-02-refreshed.png"), full_page=True)
    finally:
        context.close()
