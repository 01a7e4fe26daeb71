"""Riders' Web Push against the reporter app (SQLite and PostgreSQL): following a report needs its
credential and a real push subscription; case events queue one push per browser, once; the sender
delivers real encrypted pushes, removes what the push service says is gone, and retries 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from gridloop.clock import FrozenClock, SystemClock, set_clock
from gridloop.consumer import Incoming
from schemas.events import CaseOpened, CaseQuestionAsked, CaseTransitioned, CaseUpdatedPublic, make_event
from schemas.reference import Place
from services.reporter.handlers import handlers
from services.reporter.push_sender import PushSender
from tests.support.pushservice import BrowserKeys, PushService, vapid_claims
from tests.support.reporter import reporter_app

SUBJECT = "mailto:ops@gridloop.test"


@pytest.fixture
def push_service(tmp_path: Path) -> Iterator[PushService]:
    """An HTTPS push service on loopback."""
    with PushService(tmp_path / "tls") as service:
        yield service


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """A frozen process clock: retries come due when the test moves it."""
    frozen = FrozenClock(datetime.now(UTC))
    set_clock(frozen)
    yield frozen
    set_clock(SystemClock())


@pytest.fixture
def reporter(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FastAPI, dict[str, Place]]]:
    """The reporter app, with pushes allowed to loopback only (the test's push service)."""
    monkeypatch.setenv("GRIDLOOP_PUSH_HOSTS", "127.0.0.1")
    monkeypatch.setenv("GRIDLOOP_VAPID_SUBJECT", SUBJECT)
    app, places = reporter_app(db_url, tmp_path / "var")
    yield app, {p.place_id: p for p in places}
    app.state.reporter.runtime.db.dispose()


def rows(app: FastAPI, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows from the reporter's database."""
    with app.state.reporter.runtime.db.session() as s:
        return [tuple(r) for r in s.execute(text(sql), params).all()]


def new_report(app: FastAPI, place: Place) -> tuple[TestClient, str, str]:
    """A rider (their client keeps the rider cookie) sends a report: (client, report id, tracking key)."""
    rider = TestClient(app)
    r = rider.post("/api/v1/reports", json={"code": place.code, "category": "manhole_cover"})
    assert r.status_code == 202
    url = r.json()["tracking_url"]
    return rider, r.json()["report_id"], url.split("?k=")[1]


def apply(app: FastAPI, name: str, data: Any, event_id: str) -> None:
    """Apply one event (with a given id) through the reporter's handlers, as its consumer would."""
    at = getattr(data, "at", None) or getattr(data, "opened_at", None) or datetime.now(UTC)
    event = make_event(name, data, source="closer", subject=data.case_id, time=at, event_id=event_id)
    with app.state.reporter.runtime.db.session(write=True) as session:
        handlers()[name](session, Incoming(event, data, "cases.events", 0, 0, data.case_id))


def opened(app: FastAPI, case_id: str, report_id: str) -> None:
    """`case.opened` for a report."""
    now = datetime.now(UTC)
    data = CaseOpened(
        case_id=case_id, report_id=report_id, station_id="yh-s1", category="manhole_cover", opened_at=now
    )
    apply(app, "case.opened", data, f"ev-open-{case_id}")


def moved(app: FastAPI, case_id: str, status: str, version: int, event_id: str) -> None:
    """A case transition, with its event id."""
    data = CaseTransitioned(
        case_id=case_id,
        action=status,
        status=status,
        station_id="yh-s1",
        version=version,
        at=datetime.now(UTC),
    )
    apply(app, f"case.{status}", data, event_id)


def trusting(ca: Path) -> Any:
    """A requests session factory trusting the test CA (what REQUESTS_CA_BUNDLE does in production)."""

    def make() -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, wins over verify
        session.verify = str(ca)
        return session

    return make


def test_following_a_report_needs_its_credential_and_keeps_one_row_per_browser(
    reporter: tuple[FastAPI, dict[str, Place]],
) -> None:
    """The rider cookie or the tracking secret subscribes; the same browser again refreshes its row;
    unsubscribing removes it; the VAPID public key is served."""
    app, places = reporter
    rider, report_id, key = new_report(app, places["yh-p01"])
    phone, laptop = BrowserKeys(), BrowserKeys()
    url = f"/api/v1/reports/{report_id}/push"
    first = rider.post(url, json={**phone.subscription("https://127.0.0.1/push/a"), "lang": "en"})
    assert first.status_code == 201 and first.json() == {"report_id": report_id, "subscribed": True}
    again = rider.post(url, json=phone.subscription("https://127.0.0.1/push/a"))
    assert again.status_code == 200
    other = TestClient(app).post(
        url, json=laptop.subscription("https://127.0.0.1/push/b"), headers={"X-Tracking-Key": key}
    )
    assert other.status_code == 201
    assert rows(app, "SELECT report_id, endpoint, p256dh, auth, lang FROM push_subscription ORDER BY id") == [
        (report_id, "https://127.0.0.1/push/a", phone.p256dh, phone.auth, "zh"),
        (report_id, "https://127.0.0.1/push/b", laptop.p256dh, laptop.auth, "zh"),
    ]
    gone = rider.request("DELETE", url, json={"endpoint": "https://127.0.0.1/push/a"})
    assert gone.status_code == 200 and gone.json() == {"report_id": report_id, "removed": 1}
    assert rider.request("DELETE", url, json={"endpoint": "https://127.0.0.1/push/a"}).json()["removed"] == 0
    assert rows(app, "SELECT endpoint FROM push_subscription") == [("https://127.0.0.1/push/b",)]
    public = rider.get("/api/v1/push/key").json()["public_key"]
    assert public == app.state.reporter.vapid.public_key and len(public) == 87  # 65 bytes, base64url


def test_bad_subscriptions_are_refused_and_nothing_is_written(
    reporter: tuple[FastAPI, dict[str, Place]],
) -> None:
    """Malformed JSON, a non-https or unknown push host, bad keys, an oversize body, another report,
    a wrong secret, an unknown report, a sixth browser: each its exact status, no row written."""
    app, places = reporter
    rider, report_id, key = new_report(app, places["yh-p01"])
    _other_rider, other_id, _other_key = new_report(app, places["yh-p02"])
    good = BrowserKeys().subscription("https://127.0.0.1/push/x")
    url = f"/api/v1/reports/{report_id}/push"
    stranger = TestClient(app)
    cases: list[tuple[TestClient, str, dict[str, Any], int, str]] = [
        (rider, url, {"content": b"{not json"}, 400, "invalid_json"),
        (rider, url, {"json": ["a"]}, 422, "invalid"),
        (rider, url, {"json": {"endpoint": good["endpoint"]}}, 422, "invalid"),
        (rider, url, {"json": {**good, "endpoint": "http://127.0.0.1/push/x"}}, 422, "invalid"),
        (rider, url, {"json": {**good, "endpoint": "https://user:pw@127.0.0.1/x"}}, 422, "invalid"),
        (rider, url, {"json": {**good, "endpoint": "https://10.0.0.7/admin"}}, 422, "push_host_refused"),
        (rider, url, {"json": {**good, "keys": {**good["keys"], "p256dh": "AAAA"}}}, 422, "invalid"),
        (rider, url, {"json": {**good, "keys": {**good["keys"], "auth": "c2hvcnQ"}}}, 422, "invalid"),
        (rider, url, {"json": {**good, "extra": 1}}, 422, "invalid"),
        (rider, url, {"json": {**good, "lang": "fr"}}, 422, "invalid"),
        (
            rider,
            url,
            {"json": {**good, "endpoint": "https://127.0.0.1/" + "x" * 5000}},
            413,
            "payload_too_large",
        ),
        (rider, f"/api/v1/reports/{other_id}/push", {"json": good}, 403, "not_your_report"),
        (stranger, url, {"json": good, "headers": {"X-Tracking-Key": "w" + key[1:]}}, 403, "not_your_report"),
        (stranger, url, {"json": good}, 403, "not_your_report"),
        (rider, "/api/v1/reports/r_nope/push", {"json": good}, 404, "not_found"),
        (stranger, url, {"json": {"endpoint": good["endpoint"]}, "method": "DELETE"}, 403, "not_your_report"),
    ]
    for client, target, kwargs, status, code in cases:
        method = kwargs.pop("method", "POST")
        answer = client.request(method, target, **kwargs)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (target, kwargs)
    assert rows(app, "SELECT count(*) FROM push_subscription") == [(0,)]

    for n in range(5):
        assert (
            rider.post(url, json=BrowserKeys().subscription(f"https://127.0.0.1/push/{n}")).status_code == 201
        )
    sixth = rider.post(url, json=BrowserKeys().subscription("https://127.0.0.1/push/6"))
    assert sixth.status_code == 409 and sixth.json()["error"]["code"] == "too_many_subscriptions"
    assert rows(app, "SELECT count(*) FROM push_subscription") == [(5,)]


def test_case_events_queue_one_push_per_browser_once(reporter: tuple[FastAPI, dict[str, Place]]) -> None:
    """Signed for, resolved, closed queue one push per following browser, even when an event is
    applied twice; other events, a late event and reports nobody follows queue nothing."""
    app, places = reporter
    rider, report_id, _key = new_report(app, places["yh-p01"])
    _quiet, quiet_id, _ = new_report(app, places["yh-p01"])
    url = f"/api/v1/reports/{report_id}/push"
    assert rider.post(url, json=BrowserKeys().subscription("https://127.0.0.1/push/a")).status_code == 201
    assert (
        rider.post(
            url, json={**BrowserKeys().subscription("https://127.0.0.1/push/b"), "lang": "en"}
        ).status_code
        == 201
    )
    opened(app, "c_p", report_id)
    opened(app, "c_q", quiet_id)
    moved(app, "c_p", "acknowledged", 2, "ev-ack")
    moved(app, "c_p", "acknowledged", 2, "ev-ack")  # redelivered past the ledger: the queue dedupes too
    moved(app, "c_q", "acknowledged", 2, "ev-q-ack")
    moved(app, "c_p", "dispatched", 3, "ev-dispatch")
    moved(app, "c_p", "resolved", 4, "ev-resolve")
    moved(app, "c_p", "acknowledged", 2, "ev-late-ack")  # older than the view: moves nothing, pushes nothing
    moved(app, "c_p", "closed", 5, "ev-close")
    queued = rows(
        app,
        "SELECT s.endpoint, m.event_id, m.kind, m.payload, m.state FROM push_message m "
        "JOIN push_subscription s ON s.id = m.subscription_id ORDER BY m.id",
    )
    texts = {
        ("zh", "acknowledged"): "网格站已签收您的报告",
        ("en", "acknowledged"): "The grid station signed for your report",
        ("zh", "resolved"): "已处理，请确认是否修好",
        ("en", "resolved"): "It has been fixed: please confirm",
        ("zh", "closed"): "您的报告已结案，谢谢！",
        ("en", "closed"): "Your report is closed. Thank you!",
    }
    expected = []
    for event, kind in (("ev-ack", "acknowledged"), ("ev-resolve", "resolved"), ("ev-close", "closed")):
        for endpoint, lang in (("https://127.0.0.1/push/a", "zh"), ("https://127.0.0.1/push/b", "en")):
            anchor = "#feedback" if kind == "resolved" else ""
            body = {
                "title": "随手报有进展" if lang == "zh" else "Your report has news",
                "body": texts[(lang, kind)],
                "url": f"/t/{report_id}{anchor}",
                "tag": f"gl-{report_id}",
            }
            expected.append((endpoint, event, kind, body, "pending"))
    assert [(e, ev, k, json.loads(p), s) for e, ev, k, p, s in queued] == expected


def test_a_question_or_public_update_is_pushed_once_and_never_carries_the_words(
    reporter: tuple[FastAPI, dict[str, Place]],
) -> None:
    """Staff's question and public update reach the following browser as one push each (applied twice:
    still one), opening the reply form or the updates; the push says that something came, not what."""
    app, places = reporter
    rider, report_id, _key = new_report(app, places["yh-p01"])
    endpoint = "https://127.0.0.1/push/q"
    assert (
        rider.post(f"/api/v1/reports/{report_id}/push", json=BrowserKeys().subscription(endpoint)).status_code
        == 201
    )
    opened(app, "c_qa", report_id)
    now = datetime.now(UTC)
    words = "井盖下面有没有积水？请拍一张"
    question = CaseQuestionAsked(
        case_id="c_qa",
        station_id="yh-s1",
        version=2,
        at=now,
        message_id=1,
        text=words,
        report_ids=[report_id],
    )
    update = CaseUpdatedPublic(
        case_id="c_qa",
        station_id="yh-s1",
        version=3,
        at=now,
        message_id=2,
        text="已派人",
        report_ids=[report_id],
    )
    apply(app, "case.question_asked", question, "ev-ask")
    apply(app, "case.question_asked", question, "ev-ask")
    apply(app, "case.updated_public", update, "ev-update")
    queued = rows(app, "SELECT m.event_id, m.kind, m.payload FROM push_message m ORDER BY m.id")
    assert [(e, k, json.loads(p)) for e, k, p in queued] == [
        (
            "ev-ask",
            "question_asked",
            {
                "title": "随手报有进展",
                "body": "网格站有问题想问您，请回复",
                "url": f"/t/{report_id}#reply",
                "tag": f"gl-{report_id}",
            },
        ),
        (
            "ev-update",
            "updated_public",
            {
                "title": "随手报有进展",
                "body": "网格站发布了处理进展",
                "url": f"/t/{report_id}#updates",
                "tag": f"gl-{report_id}",
            },
        ),
    ]
    assert all(words not in p and "已派人" not in p for _, _, p in queued)
    assert rows(app, "SELECT kind, text FROM case_message ORDER BY message_id") == [
        ("question", words),
        ("public", "已派人"),
    ]


def test_sender_delivers_encrypted_pushes_removes_gone_ones_and_retries_5xx(
    reporter: tuple[FastAPI, dict[str, Place]], push_service: PushService, clock: FrozenClock
) -> None:
    """One browser's push service answers 503 then 201: retried after the backoff, sent once. The
    other's answers 410: its subscription and its queued pushes are deleted, exactly those rows."""
    app, places = reporter
    rider, report_id, _key = new_report(app, places["yh-p01"])
    ok, expired = BrowserKeys(), BrowserKeys()
    url = f"/api/v1/reports/{report_id}/push"
    assert rider.post(url, json=ok.subscription(push_service.endpoint("ok"))).status_code == 201
    assert rider.post(url, json=expired.subscription(push_service.endpoint("expired"))).status_code == 201
    push_service.script = {"/push/ok": [503], "/push/expired": [410]}
    opened(app, "c_s", report_id)
    moved(app, "c_s", "acknowledged", 2, "ev-s-ack")
    moved(app, "c_s", "resolved", 3, "ev-s-resolve")
    config = app.state.reporter.config
    sender = PushSender(
        app.state.reporter.runtime, app.state.reporter.vapid, config, trusting(push_service.ca)
    )

    # each browser's oldest push first: ok answers 503 (retried later), expired answers 410, which
    # removes its subscription and its other queued push with it
    assert sender.tick() == 2
    assert [r.path for r in push_service.received] == ["/push/ok", "/push/expired"]
    assert rows(app, "SELECT endpoint FROM push_subscription") == [(push_service.endpoint("ok"),)]
    assert rows(app, "SELECT event_id, state, attempts, last_error FROM push_message ORDER BY id") == [
        ("ev-s-ack", "pending", 1, "HTTP 503"),
        ("ev-s-resolve", "pending", 0, None),
    ]
    assert sender.tick() == 0  # the retry is not due yet, and the resolution waits behind it
    clock.advance(timedelta(seconds=config.push_retry_seconds))
    assert sender.tick() == 1
    assert sender.tick() == 1
    assert sender.tick() == 0
    assert rows(app, "SELECT event_id, state, attempts, last_error FROM push_message ORDER BY id") == [
        ("ev-s-ack", "sent", 2, None),
        ("ev-s-resolve", "sent", 1, None),
    ]
    delivered = push_service.pushes("ok")
    assert [ok.decrypt(p)["body"] for p in delivered] == ["网格站已签收您的报告"] * 2 + [
        "已处理，请确认是否修好"
    ]
    assert ok.decrypt(delivered[2]) == {
        "title": "随手报有进展",
        "body": "已处理，请确认是否修好",
        "url": f"/t/{report_id}#feedback",
        "tag": f"gl-{report_id}",
    }
    for p in delivered:
        claims = vapid_claims(p, app.state.reporter.vapid.public_key)
        assert claims["aud"] == push_service.origin and claims["sub"] == SUBJECT
        assert p.headers["ttl"] == "259200"
