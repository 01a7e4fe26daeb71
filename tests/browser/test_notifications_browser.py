"""The console's 通知 page in headless Chromium on a phone: an admin signs in, opens the page from the
nav, sees the failed notification and retries it. The closer and the notifier run in process, each
served by uvicorn on a loopback port (no broker: the delivery is failed by the notifier's own sender).

Screenshots land in the artifacts directory (test-artifacts/notifications-*.png).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridloop.demo import DEMO_PASSWORD
from tests.db.test_closer_notifications import Pair, deliveries, fail_one, make_pair
from tests.support.served import serving

pytestmark = [pytest.mark.browser]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Pair, str]]:
    """Both apps served over HTTP (cookies not Secure on plain loopback http): the pair, the closer's URL."""
    pair = make_pair(tmp_path, cookie_secure=False)
    with serving(pair.notifier, pair.port), serving(pair.closer) as closer_url:
        yield pair, closer_url
    pair.dispose()


def test_admin_retries_a_failed_notification_on_a_phone(
    served: tuple[Pair, str], phone: Any, artifacts: Path
) -> None:
    """The nav's 通知 link opens the failed list; 重试 takes the row off it and the notifier has it
    pending again."""
    pair, base = served
    case_id, row = fail_one(pair)
    page = phone.new_page()
    page.goto(f"{base}/console/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.locator("form button[type=submit]").first.click()
    page.wait_for_url(f"{base}/console/queue")
    page.locator("nav a[href='/console/notifications']").click()
    page.wait_for_url(f"{base}/console/notifications")
    rows = page.locator("tr[data-delivery]")
    assert rows.count() == 1
    assert rows.first.locator("a").inner_text() == case_id
    assert rows.first.locator("td").nth(0).inner_text() == "json"
    page.screenshot(path=str(artifacts / "notifications-failed.png"), full_page=True)

    rows.first.locator("button", has_text="重试").click()
    page.wait_for_url(f"{base}/console/notifications?retried={row.id}")
    assert page.locator("p.ok[role=status]").inner_text() == "已重新排队发送，通知服务马上会再试。"
    assert page.locator("tr[data-delivery]").count() == 0
    assert page.locator("table.notifications tbody td").inner_text() == "没有发送失败的通知。"
    assert [(d.status, d.attempts) for d in deliveries(pair)] == [("pending", 0)]
    page.screenshot(path=str(artifacts / "notifications-retried.png"), full_page=True)
