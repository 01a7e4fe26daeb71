"""The notifier on Apache Kafka, in process, sending to a webhook sink inside the test (issue 16).

A rule match reaches the sink exactly once although the event is published twice and the notifier
restarts; a channel that is down is tried `max_attempts` times, listed as failed by the API and
counted failed once; a flood to one channel arrives as one grouped message.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaProducer
from sqlmodel import select

from gridloop import metrics, migrate
from gridloop.clock import utcnow
from gridloop.settings import Settings
from gridloop.topics import ensure_topics
from schemas.envelope import CloudEvent
from services.closer.auth import issue_token
from services.notifier import channels
from services.notifier.app import build
from services.notifier.config import NotifierConfig
from services.notifier.models import Delivery
from services.notifier.sink import Sink
from tests.support.notifier import opened
from tests.support.stacks import wait_for

pytestmark = [pytest.mark.kafka]
SECRET = "notifier-test-secret-0123456789abcdef"


@pytest.fixture
def sink() -> Iterator[Sink]:
    """The webhook every station's notifications go to."""
    server = Sink().start()
    yield server
    server.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """A notifier of this test's own: topics under a fresh prefix, a migrated SQLite database."""
    prefix = f"nt{uuid.uuid4().hex[:6]}."
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "var_dir": tmp_path,
        "topic_prefix": prefix,
        "jwt_secret": SECRET,
        "session_timeout_ms": 6000,
        "closer_public_url": "https://closer.example.cn",
    }
    result = Settings(**values)
    ensure_topics(kafka_bootstrap, 2, 1, prefix=prefix)
    migrate.upgrade("notifier", result.db_url("notifier"))
    return result


@contextmanager
def notifier(settings: Settings, sink: Sink, **config: Any) -> Iterator[TestClient]:
    """The notifier app running (consumer, sender) until the block ends."""
    values: dict[str, Any] = {
        "fallback_url": sink.url,
        "hold_seconds": 0,
        "send_interval_seconds": 0.1,
        **config,
    }
    client = TestClient(build(settings, NotifierConfig(**values)))
    with client:
        yield client


def publish(settings: Settings, *events: CloudEvent) -> None:
    """Put events on `cases.events`, keyed by case id, as the closer's relay does."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    for event in events:
        producer.send(
            settings.topic_prefix + "cases.events",
            event.model_dump_json().encode(),
            key=event.subject.encode(),
        )
    producer.flush()
    producer.close()


def sample(name: str, labels: dict[str, str]) -> float:
    """A metric's value in this process's registry (0 when the series does not exist yet)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def duplicates() -> float:
    """Events the notifier's consumer skipped as already applied."""
    return sample("gridloop_events_duplicate_total", {"group": "notifier", "topic": "cases.events"})


def rows(client: TestClient) -> list[Delivery]:
    """The notifier's deliveries, in id order."""
    with client.app.state.notifier.runtime.db.session() as session:  # type: ignore[attr-defined]
        return list(session.exec(select(Delivery).order_by(Delivery.id)))  # type: ignore[arg-type]


def admin_header(role: str = "admin") -> dict[str, str]:
    """A staff bearer token as the closer issues it, of 殷行 (where the test cases are)."""
    token = issue_token("admin", role, [], SECRET, 3600, 0, ["yinhang"])  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


def test_a_rule_match_is_sent_exactly_once_despite_redelivery(settings: Settings, sink: Sink) -> None:
    """An urgent case.opened published twice, then once more after a restart of the notifier: the sink
    gets one message, with the category, place, Shanghai due time and console link, no rider data."""
    event = opened(f"C-{uuid.uuid4().hex[:6]}", description="电话 13800138000", rider_ref="rider-xyz")
    before = duplicates()
    with notifier(settings, sink) as client:
        publish(settings, event, event)
        wait_for(
            lambda: len(sink.received) == 1 and duplicates() == before + 1, what="one send, one duplicate"
        )
        client.app.state.notifier.sender.tick()  # type: ignore[attr-defined]
    with notifier(settings, sink) as client:
        publish(settings, event)
        wait_for(lambda: duplicates() == before + 2, what="the third copy skipped")
        client.app.state.notifier.sender.tick()  # type: ignore[attr-defined]
        assert [(d.status, d.attempts) for d in rows(client)] == [("sent", 1)]
    assert len(sink.received) == 1
    (message,) = sink.received
    assert message.title == "【紧急】新案件 · 井盖缺失或破损"
    assert "地点：开鲁新村 3 号门" in message.body
    assert "办结时限：2026-11-24 14:00（上海时间）" in message.body
    assert f"查看：https://closer.example.cn/console/cases/{event.subject}" in message.body
    assert "13800138000" not in message.body and "rider-xyz" not in message.body


def test_a_down_channel_is_retried_then_listed_as_failed(settings: Settings, sink: Sink) -> None:
    """The sink answers 503: three attempts (fast backoff), then failed; the API lists it for admins
    (secrets hidden), supervisors too, staff not; the failed metric counts it once; a retry after the
    channel is back sends it."""
    sink.status = 503
    failed0 = sample("gridloop_notifications_total", {"channel_kind": "json", "outcome": "failed"})
    retry0 = sample("gridloop_notifications_total", {"channel_kind": "json", "outcome": "retry"})
    event = opened(f"C-{uuid.uuid4().hex[:6]}")
    with notifier(settings, sink, max_attempts=3, backoff_seconds=0.05, backoff_max_seconds=0.1) as client:
        publish(settings, event)
        wait_for(lambda: [d.status for d in rows(client)] == ["failed"], what="the delivery failed")
        assert sink.hits == 3
        answer = client.get("/api/v1/deliveries", headers=admin_header())
        assert answer.status_code == 200
        (item,) = answer.json()["items"]
        assert (item["event_id"], item["status"], item["attempts"], item["target"]) == (
            event.id,
            "failed",
            3,
            "station:yh-s1",
        )
        assert item["channel_kind"] == "json" and item["last_error"]
        assert client.get("/api/v1/deliveries", headers=admin_header("supervisor")).status_code == 200
        assert client.get("/api/v1/deliveries", headers=admin_header("staff")).status_code == 403
        assert client.get("/api/v1/deliveries").status_code == 401
        assert (
            sample("gridloop_notifications_total", {"channel_kind": "json", "outcome": "failed"})
            == failed0 + 1
        )
        assert (
            sample("gridloop_notifications_total", {"channel_kind": "json", "outcome": "retry"}) == retry0 + 2
        )
        sink.status = 200
        again = client.post(f"/api/v1/deliveries/{item['id']}/retry", headers=admin_header())
        assert (again.status_code, again.json()["status"]) == (200, "pending")
        wait_for(lambda: [d.status for d in rows(client)] == ["sent"], what="sent after the retry")
    assert len(sink.received) == 1


def test_a_flood_arrives_as_one_grouped_message(settings: Settings, sink: Sink) -> None:
    """Eight urgent cases published together, held for a digest: the sink gets one message listing eight."""
    events = [opened(f"F-{uuid.uuid4().hex[:6]}") for _ in range(8)]
    with notifier(settings, sink, hold_seconds=3600, digest_threshold=5) as client:
        publish(settings, *events)
        wait_for(lambda: len(rows(client)) == 8, what="eight deliveries recorded")
        assert sink.received == []  # held: nothing is due yet
        client.app.state.notifier.sender.tick(utcnow() + timedelta(hours=2))  # type: ignore[attr-defined]
        assert {(d.status, d.digest_size) for d in rows(client)} == {("sent", 8)}
    (message,) = sink.received
    assert message.title == "【汇总】8 条通知"
    assert all(f"/console/cases/{e.subject}" in message.body for e in events)


def test_test_send_api_and_its_guard(settings: Settings, sink: Sink) -> None:
    """POST /api/v1/notify/test sends now for admins; a URL Apprise cannot use is 422; others 403."""
    with notifier(settings, sink) as client:
        sent = client.post("/api/v1/notify/test", json={"url": sink.url}, headers=admin_header())
        assert sent.status_code == 200 and sent.json()["sent"] is True
        bad = client.post("/api/v1/notify/test", json={"url": "nosuch://x"}, headers=admin_header())
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "bad_channel")
        refused = client.post(
            "/api/v1/notify/test", json={"url": sink.url}, headers=admin_header("supervisor")
        )
        assert refused.status_code == 403
    assert [m.title for m in sink.received] == ["GridLoop 测试通知"]


def test_notify_test_command(sink: Sink, capsys: pytest.CaptureFixture[str]) -> None:
    """`gridloop notify test URL`: exit 0 and "sent" when the channel took it; 1 and Apprise's reason
    when it did not; 2 for a URL Apprise cannot use."""
    from gridloop.brokers import free_port
    from services.notifier.cli import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(["notify", "test", *argv])
        code: int = args.func(args)
        return code

    assert run(sink.url, "--title", "你好") == 0
    assert capsys.readouterr().out == f"sent to {channels.masked(sink.url)}\n"
    assert [m.title for m in sink.received] == ["你好"]
    closed = f"json://127.0.0.1:{free_port()}/"
    assert run(closed) == 1
    assert capsys.readouterr().err.startswith(f"error: not sent to {channels.masked(closed)}: ")
    assert run("nosuch://x") == 2
    assert capsys.readouterr().err == "error: not a URL Apprise can send to: nosuch://…\n"
