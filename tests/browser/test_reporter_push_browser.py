"""The riders' service worker in headless Chromium on a phone viewport: the scan page opens and
queues a report with no signal after a first visit, and "有进展通知我" reaches the server.

The reporter runs in process (uvicorn on a loopback port) on the real broker. What Chromium allows
here: the worker registers and serves the cached shell offline; Notification permission can be
granted; PushManager.subscribe is attempted for real and its outcome recorded (headless Chromium
has no push service, so it is refused); the page's own subscribe function then sends a subscription
as PushManager would give it, and a push message is delivered to the worker over the DevTools
protocol (ServiceWorker.deliverPushMessage), which shows the notification from its payload.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import text

from gridloop import demo, migrate
from gridloop.brokers.ports import free_port
from gridloop.db import Database
from gridloop.settings import Settings
from gridloop.topics import ensure_topics
from schemas.reference import load_jurisdiction, load_places
from services.reporter import cli as reporter_cli
from services.reporter.app import build
from services.reporter.models import Base
from tests.support.pushservice import BrowserKeys

pytestmark = [pytest.mark.browser, pytest.mark.kafka]
PLACES = load_places(demo.DEMO_PLACES)


def wait_js(page: Any, expression: str, timeout: float = 20.0) -> Any:
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while not (value := page.evaluate(expression)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {expression}")
        page.wait_for_timeout(100)
    return value


@pytest.fixture(scope="module")
def reporter(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """The reporter app served on a loopback port: (base URL, app)."""
    var = tmp_path_factory.mktemp("push-browser")
    prefix = f"pb{uuid.uuid4().hex[:6]}."
    port = free_port()
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        var_dir=var,
        topic_prefix=prefix,
        jwt_secret="test-secret-" + "b" * 32,
        public_base_url=f"http://127.0.0.1:{port}",
        session_timeout_ms=6000,
    )
    ensure_topics(kafka_bootstrap, 2, 1, prefix=prefix)
    migrate.upgrade("reporter", settings.db_url("reporter"))
    db = Database(settings.db_url("reporter"), Base.metadata)
    reporter_cli.load_places(db, load_jurisdiction(settings.jurisdiction_dir))
    db.dispose()
    app = build(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the reporter did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=15)


def count(app: Any, sql: str) -> int:
    """One number from the reporter's database."""
    with app.state.reporter.runtime.db.session() as s:
        return int(s.execute(text(sql)).scalar() or 0)


def test_scan_page_opens_offline_from_the_worker_and_sends_when_back_online(
    reporter: tuple[str, Any], phone: Any, artifacts: Path
) -> None:
    """First visit online installs the worker; offline, the same code's page comes from its cache,
    the report is queued on the phone, and it is sent once the phone is back online."""
    base, app = reporter
    url = f"{base}/r/{PLACES[3].code}"
    page = phone.new_page()
    page.goto(url)
    assert wait_js(page, "navigator.serviceWorker.getRegistration().then(r => !!(r && r.active))")
    assert page.evaluate("navigator.serviceWorker.getRegistration().then(r => r.scope)") == f"{base}/"
    wait_js(page, f"caches.match('{base}/r/{PLACES[3].code}').then(r => !!r)")
    before = count(app, "SELECT count(*) FROM report")

    phone.set_offline(True)
    response = page.goto(url)
    assert response is not None and response.from_service_worker
    assert page.evaluate("navigator.onLine") is False
    assert (
        page.locator("#report").is_visible() and page.locator("#place-name").inner_text() == PLACES[3].name_zh
    )
    page.locator(".cat").first.click()
    page.locator("#send").click()
    assert page.locator("#msg").inner_text() == "没有网络：报告已保存在手机上，联网后会自动发送。"
    assert page.evaluate("JSON.parse(localStorage.getItem('gl_outbox')).length") == 1
    page.screenshot(path=str(artifacts / "reporter-push-offline.png"), full_page=True)
    assert count(app, "SELECT count(*) FROM report") == before

    phone.set_offline(False)
    page.locator("#receipt").wait_for(state="visible")
    assert page.evaluate("JSON.parse(localStorage.getItem('gl_outbox')).length") == 0
    assert count(app, "SELECT count(*) FROM report") == before + 1
    report_id = page.locator("#receipt-id").inner_text()
    assert count(app, f"SELECT count(*) FROM report WHERE report_id = '{report_id}'") == 1
    assert page.locator("#notify-on").is_visible()  # the receipt offers "有进展通知我"


def test_notify_me_sends_the_subscription_and_the_worker_shows_a_push(
    reporter: tuple[str, Any], phone: Any, artifacts: Path
) -> None:
    """The tracking page's button: permission granted; PushManager.subscribe tried for real; the
    page's subscribe function stores a subscription for this report only; a push delivered to the
    worker shows its notification; the rider can stop it."""
    base, app = reporter
    phone.grant_permissions(["notifications"], origin=base)
    page = phone.new_page()
    page.goto(f"{base}/r/{PLACES[4].code}")
    wait_js(page, "navigator.serviceWorker.getRegistration().then(r => !!(r && r.active))")
    page.locator(".cat").first.click()
    page.locator("#send").click()
    page.locator("#receipt").wait_for(state="visible")
    report_id = page.locator("#receipt-id").inner_text()
    page.goto(f"{base}/t/{report_id}")
    assert page.locator("#notify-on").inner_text() == "🔔 有进展通知我"

    # what headless Chromium does with a real subscribe (no push service behind it): recorded
    real = page.evaluate(
        """navigator.serviceWorker.ready.then(reg => reg.pushManager.subscribe({userVisibleOnly: true,
             applicationServerKey: document.getElementById('gl-config') && JSON.parse(
               document.getElementById('gl-config').textContent).vapidKey})).then(
             s => 'subscribed ' + new URL(s.endpoint).host, e => 'refused: ' + e.name)"""
    )
    (artifacts / "reporter-push-subscribe.txt").write_text(real + "\n")
    assert real.startswith(("refused: ", "subscribed "))

    fake = BrowserKeys().subscription(f"https://fcm.googleapis.com/fcm/send/test-{uuid.uuid4().hex}")
    sent = page.evaluate(f"window.GLPush.send({json.dumps(report_id)}, {json.dumps(fake)})")
    assert sent == {"status": 201, "body": {"report_id": report_id, "subscribed": True}}
    assert count(app, f"SELECT count(*) FROM push_subscription WHERE report_id = '{report_id}'") == 1
    assert count(app, "SELECT count(*) FROM push_subscription") == 1
    page.reload()
    assert (
        page.locator("#notify-off").is_visible()
        and page.locator("#notify-msg").inner_text() == "已开启进展通知"
    )
    assert not page.locator("#notify-on").is_visible()

    # a push as the push service would deliver it, straight into the worker: it shows the notification
    cdp = phone.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
    cdp.send("ServiceWorker.enable")
    deadline = time.monotonic() + 10
    while not registrations and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    registration = next(r for r in registrations if r["scopeURL"] == f"{base}/")
    payload = {
        "title": "随手报有进展",
        "body": "已处理，请确认是否修好",
        "url": f"/t/{report_id}#feedback",
        "tag": f"gl-{report_id}",
    }
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": base, "registrationId": registration["registrationId"], "data": json.dumps(payload)},
    )
    shown = wait_js(
        page,
        "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns => ns.length && "
        "ns.map(n => [n.title, n.body, n.tag, n.data.url]))",
    )
    assert shown == [[payload["title"], payload["body"], payload["tag"], payload["url"]]]
    page.screenshot(path=str(artifacts / "reporter-push-following.png"), full_page=True)

    dropped = page.evaluate(f"window.GLPush.drop({json.dumps(report_id)}, {json.dumps(fake['endpoint'])})")
    assert dropped == {"status": 200, "body": {"report_id": report_id, "removed": 1}}
    assert count(app, "SELECT count(*) FROM push_subscription") == 0
    page.reload()
    assert page.locator("#notify-on").is_visible() and not page.locator("#notify-off").is_visible()
