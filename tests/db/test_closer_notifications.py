"""The console's 通知 page against a real notifier: the closer and the notifier apps in process on
SQLite, the notifier served over real HTTP on a loopback port, one delivery failed for real (Apprise
sending to a closed port). Who sees the list, who may retry, CSRF, and a notifier that is down."""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select

from gridloop import demo, migrate
from gridloop.brokers.ports import free_port
from gridloop.clock import FrozenClock, utcnow
from gridloop.settings import Settings
from services.closer.app import build as build_closer
from services.closer.cli import load_demo_staff
from services.closer.config import CloserConfig
from services.notifier.app import build as build_notifier
from services.notifier.config import NotifierConfig
from services.notifier.models import Delivery
from tests.db.test_closer_api import (
    MONDAY_9,
    SECRET,
    console_sign_in,
    frozen,
    open_case,
)
from tests.support.notifier import Fed, opened
from tests.support.served import serving

# nothing listens on the discard port: Apprise's send fails for real; the password is the secret to hide
DEAD = "json://robot:s3cret-key@127.0.0.1:9/hook"
DOWN = "通知服务暂时无法连接（503），请稍后刷新此页。"
NONE = "没有发送失败的通知。"


@dataclass
class Pair:
    """The closer (with its test client) and the notifier it calls, on one signing key."""

    closer: FastAPI
    notifier: FastAPI
    client: TestClient
    port: int

    def dispose(self) -> None:
        """Close both database pools."""
        self.closer.state.closer.runtime.db.dispose()
        self.notifier.state.notifier.runtime.db.dispose()


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen at a working Monday morning."""
    yield from frozen(MONDAY_9)


def make_pair(var_dir: Path, **settings: Any) -> Pair:
    """Both apps on their own SQLite files; the closer's GRIDLOOP_NOTIFIER_URL names the notifier's
    port (`settings`: more of the shared settings)."""
    port = free_port()
    urls = {s: f"sqlite:///{var_dir / (s + '.db')}" for s in ("closer", "notifier")}
    for service, url in urls.items():
        migrate.upgrade(service, url)
    shared = Settings(
        var_dir=var_dir,
        closer_database_url=urls["closer"],
        notifier_database_url=urls["notifier"],
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        jwt_secret=SECRET,
        notifier_url=f"http://127.0.0.1:{port}",
        **settings,
    )
    closer = build_closer(shared, CloserConfig())
    load_demo_staff(closer.state.closer.runtime.db, closer.state.closer.jurisdiction)
    # one attempt, no hold: the first send's failure lists the delivery as failed
    notifier = build_notifier(shared, NotifierConfig(fallback_url=DEAD, hold_seconds=0, max_attempts=1))
    return Pair(closer, notifier, TestClient(closer, base_url="https://testserver"), port)


@pytest.fixture
def pair(tmp_path: Path, clock: FrozenClock) -> Iterator[Pair]:
    """The closer and the notifier on SQLite, disposed after the test."""
    p = make_pair(tmp_path)
    yield p
    p.dispose()


def fail_one(pair: Pair) -> tuple[str, Delivery]:
    """A real case in the closer whose urgent-case notification the notifier failed to send."""
    case_id = open_case(pair.closer, priority="urgent")
    parts = pair.notifier.state.notifier
    Fed(parts.runtime.db, parts.config).feed(opened(case_id, at=utcnow()))
    parts.sender.tick()
    (row,) = deliveries(pair)
    assert (row.status, row.attempts, row.case_id) == ("failed", 1, case_id)
    return case_id, row


def deliveries(pair: Pair) -> list[Delivery]:
    """The notifier's delivery rows, in id order."""
    with pair.notifier.state.notifier.runtime.db.session() as session:
        return list(session.exec(select(Delivery).order_by(Delivery.id)))  # type: ignore[arg-type]


def sign_in(pair: Pair, username: str) -> None:
    """A console session for a demo account."""
    assert console_sign_in(pair.client, username, demo.DEMO_PASSWORD).status_code == 303


def csrf_of(page: str) -> str:
    """The CSRF token of a console page's forms."""
    return page.split('name="csrf" value="')[1].split('"')[0]


def test_admin_sees_the_failed_list_and_retries_it_off_the_list(pair: Pair) -> None:
    """An admin's page lists the failed delivery (kind, masked channel, event, case link, attempts,
    Apprise's error); a forged form retries nothing; the real form puts the row back to pending, the
    list is empty after it, and a second retry is the notifier's 409 in words."""
    case_id, row = fail_one(pair)
    sign_in(pair, "admin")
    with serving(pair.notifier, pair.port):
        page = pair.client.get("/console/notifications")
        assert page.status_code == 200
        body = page.text
        assert body.count("data-delivery=") == 1 and f'data-delivery="{row.id}"' in body
        assert '<a href="/console/notifications" aria-current="page">通知</a>' in body
        assert f'<td data-label="案件"><a href="/console/cases/{case_id}">{case_id}</a></td>' in body
        assert '<td data-label="渠道类型">json</td>' in body
        assert '<td data-label="渠道"><code>json://robot:****@127.0.0.1:9/hook?method=POST&amp;' in body
        assert "s3cret-key" not in body
        assert '<td data-label="事件">case.opened</td>' in body and '<td data-label="尝试次数">1</td>' in body
        assert row.last_error and f'<td data-label="最后的错误">{html.escape(row.last_error)}</td>' in body
        assert body.count(f'action="/console/notifications/{row.id}/retry"') == 1
        csrf = csrf_of(body)

        forged = pair.client.post(f"/console/notifications/{row.id}/retry", data={"csrf": "forged"})
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
        missing = pair.client.post(f"/console/notifications/{row.id}/retry", data={})
        assert missing.status_code == 403
        assert [(d.status, d.attempts) for d in deliveries(pair)] == [("failed", 1)]

        done = pair.client.post(
            f"/console/notifications/{row.id}/retry", data={"csrf": csrf}, follow_redirects=False
        )
        assert (
            done.status_code == 303 and done.headers["location"] == f"/console/notifications?retried={row.id}"
        )
        assert [(d.status, d.attempts) for d in deliveries(pair)] == [("pending", 0)]
        after = pair.client.get(done.headers["location"])
        assert after.status_code == 200 and after.text.count("data-delivery=") == 0
        assert NONE in after.text and "已重新排队发送，通知服务马上会再试。" in after.text

        again = pair.client.post(f"/console/notifications/{row.id}/retry", data={"csrf": csrf})
        assert again.status_code == 409
        assert "这条通知已不在失败列表中（可能已被重试）。" in again.text
        unknown = pair.client.post("/console/notifications/999999/retry", data={"csrf": csrf})
        assert unknown.status_code == 404 and "没有这条通知。" in unknown.text


def test_supervisors_see_without_retrying_and_staff_are_refused(pair: Pair) -> None:
    """A centre's supervisor sees the list and the nav link but no retry button, and a posted retry
    is refused; another street's centre sees an empty list; a station's staff get 403 and no link."""
    _case_id, row = fail_one(pair)
    with serving(pair.notifier, pair.port):
        sign_in(pair, "yh-centre")
        page = pair.client.get("/console/notifications")
        assert page.status_code == 200 and page.text.count("data-delivery=") == 1
        assert "/retry" not in page.text
        refused = pair.client.post(
            f"/console/notifications/{row.id}/retry", data={"csrf": csrf_of(page.text)}
        )
        assert refused.status_code == 403 and "只有管理员可以重试通知。" in refused.text
        assert [(d.status, d.attempts) for d in deliveries(pair)] == [("failed", 1)]

        # 彭浦's centre: 殷行's delivery is not its to see (the notifier scopes by the token's streets)
        sign_in(pair, "pp-centre")
        other = pair.client.get("/console/notifications")
        assert other.status_code == 200 and other.text.count("data-delivery=") == 0 and NONE in other.text

        sign_in(pair, "yh-s1")
        queue = pair.client.get("/console/queue")
        assert queue.status_code == 200 and "/console/notifications" not in queue.text
        staff = pair.client.get("/console/notifications")
        assert staff.status_code == 403 and "只有城运中心督办人员可以查看此页。" in staff.text
        assert "data-delivery=" not in staff.text


def test_a_notifier_that_is_down_is_a_message_in_the_page(pair: Pair) -> None:
    """Nothing listening on GRIDLOOP_NOTIFIER_URL: the page answers 503 with the message (no table),
    and a retry says the same; the delivery is untouched."""
    _case_id, row = fail_one(pair)
    sign_in(pair, "admin")
    page = pair.client.get("/console/notifications")
    assert page.status_code == 503
    assert page.text.count(DOWN) == 1 and "data-delivery=" not in page.text and NONE not in page.text
    retry = pair.client.post(f"/console/notifications/{row.id}/retry", data={"csrf": csrf_of(page.text)})
    assert retry.status_code == 503 and retry.text.count(DOWN) == 1
    assert [(d.status, d.attempts) for d in deliveries(pair)] == [("failed", 1)]


def test_signed_out_goes_to_the_login_page(pair: Pair) -> None:
    """No session: the login page, never a call to the notifier."""
    r = pair.client.get("/console/notifications", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
