"""A Web Push arrives decrypted, driven by real case events on the real broker, exactly once each.

The reporter app runs in process with its consumer, relay and push sender on Apache Kafka; the
case events are published as the closer publishes them (one of them twice, with the same id, as a
redelivery brings it); the push service inside the test decrypts each push with `http_ece` and
checks its VAPID signature.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaProducer
from sqlalchemy import text

from gridloop import demo, migrate
from gridloop.db import Database
from gridloop.settings import Settings
from gridloop.topics import CASES_EVENTS, ensure_topics
from schemas.envelope import CloudEvent
from schemas.events import CaseOpened, CaseTransitioned, make_event
from schemas.reference import load_jurisdiction, load_places
from services.reporter import cli as reporter_cli
from services.reporter.app import build
from services.reporter.models import Base
from tests.support.pushservice import BrowserKeys, PushService, vapid_claims
from tests.support.stacks import wait_for

pytestmark = [pytest.mark.kafka]
SUBJECT = "mailto:ops@gridloop.test"
PLACES = load_places(demo.DEMO_PLACES)


@pytest.fixture
def push_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PushService]:
    """An HTTPS push service on loopback, trusted by the reporter as a CA bundle is in production."""
    with PushService(tmp_path / "tls") as service:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(service.ca))
        yield service


@pytest.fixture
def reporter(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, push_service: PushService
) -> Iterator[tuple[TestClient, Settings]]:
    """The reporter app running (consumer, relay, push sender) on the broker, pushes to loopback."""
    monkeypatch.setenv("GRIDLOOP_PUSH_HOSTS", "127.0.0.1")
    monkeypatch.setenv("GRIDLOOP_VAPID_SUBJECT", SUBJECT)
    monkeypatch.setenv("GRIDLOOP_PUSH_POLL_SECONDS", "0.5")
    prefix = f"push{uuid.uuid4().hex[:6]}."
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        var_dir=tmp_path / "var",
        topic_prefix=prefix,
        jwt_secret="test-secret-" + "p" * 32,
        session_timeout_ms=6000,
    )
    ensure_topics(kafka_bootstrap, 2, 1, prefix=prefix)
    migrate.upgrade("reporter", settings.db_url("reporter"))
    db = Database(settings.db_url("reporter"), Base.metadata)
    reporter_cli.load_places(db, load_jurisdiction(settings.jurisdiction_dir))
    db.dispose()
    with TestClient(build(settings)) as client:
        yield client, settings


def publish(settings: Settings, events: list[CloudEvent]) -> None:
    """Put events on `cases.events`, keyed by case id, as the closer's relay does."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    try:
        for event in events:
            producer.send(
                settings.topic_prefix + CASES_EVENTS,
                key=(event.subject or "").encode(),
                value=event.model_dump_json().encode(),
            ).get(timeout=30)
    finally:
        producer.close()


def transition(case_id: str, status: str, version: int) -> CloudEvent:
    """A case transition event."""
    at = datetime.now(UTC)
    data = CaseTransitioned(
        case_id=case_id, action=status, status=status, station_id="yh-s1", version=version, at=at
    )
    return make_event(f"case.{status}", data, source="closer", subject=case_id, time=at)


def test_case_events_on_the_broker_push_each_once_and_the_browser_decrypts_them(
    reporter: tuple[TestClient, Settings], push_service: PushService
) -> None:
    """Signed for (delivered twice by the broker), dispatched, resolved, closed: the browser gets
    exactly three pushes, in order, each decrypted with its own keys and signed with the VAPID key."""
    client, settings = reporter
    answer = client.post("/api/v1/reports", json={"code": PLACES[0].code, "category": "manhole_cover"})
    assert answer.status_code == 202, answer.text
    report_id = answer.json()["report_id"]
    browser = BrowserKeys()
    key = client.get("/api/v1/push/key").json()["public_key"]
    subscribed = client.post(
        f"/api/v1/reports/{report_id}/push", json=browser.subscription(push_service.endpoint("phone"))
    )
    assert subscribed.status_code == 201

    case_id = f"c_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    opened = CaseOpened(
        case_id=case_id, report_id=report_id, station_id="yh-s1", category="manhole_cover", opened_at=now
    )
    ack = transition(case_id, "acknowledged", 2)
    publish(
        settings,
        [
            make_event("case.opened", opened, source="closer", subject=case_id, time=now),
            ack,
            ack,  # the same event again: a redelivery
            transition(case_id, "dispatched", 3),
            transition(case_id, "resolved", 4),
            transition(case_id, "closed", 5),
        ],
    )
    # the closing push is the last event's: once it is here, every earlier event was applied
    wait_for(lambda: len(push_service.pushes("phone")) >= 3, timeout=60, what="three pushes")
    pushes = push_service.pushes("phone")
    assert [browser.decrypt(p) for p in pushes] == [
        {"title": "随手报有进展", "body": body, "url": f"/t/{report_id}{anchor}", "tag": f"gl-{report_id}"}
        for body, anchor in (
            ("网格站已签收您的报告", ""),
            ("已处理，请确认是否修好", "#feedback"),
            ("您的报告已结案，谢谢！", ""),
        )
    ]
    for p in pushes:
        claims = vapid_claims(p, key)
        assert claims["aud"] == push_service.origin and claims["sub"] == SUBJECT
        assert claims["exp"] > datetime.now(UTC).timestamp()
    db = client.app.state.reporter.runtime.db  # type: ignore[attr-defined]
    with db.session() as s:
        queued = s.execute(text("SELECT event_id, kind, state FROM push_message ORDER BY id")).all()
    assert [tuple(r) for r in queued] == [
        (ack.id, "acknowledged", "sent"),
        (queued[1][0], "resolved", "sent"),
        (queued[2][0], "closed", "sent"),
    ]
    assert client.get(f"/api/v1/reports/{report_id}").json()["status"] == "closed"
    assert len(push_service.received) == 3
