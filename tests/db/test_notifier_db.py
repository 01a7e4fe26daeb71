"""The notifier's delivery table on SQLite and PostgreSQL: deliveries once, retries, failures, digests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from gridloop import metrics, migrate, revocations
from gridloop.clock import FrozenClock, SystemClock, set_clock
from gridloop.consumer import Incoming
from gridloop.db import Database
from gridloop.leader import Leadership
from gridloop.tokens import Principal
from schemas.cases import CaseStatus
from schemas.envelope import CloudEvent
from schemas.events import (
    StaffTokensRevoked,
    TopicCasesLinked,
    TopicClosed,
    TopicMeetingRecorded,
    TopicOpened,
    make_event,
)
from services.notifier.config import NotifierConfig
from services.notifier.deliveries import Backoff
from services.notifier.handlers import Handlers
from services.notifier.models import Base, CaseInfo, Delivery
from services.notifier.sender import Sender
from tests.support.notifier import CONSOLE, RULES, T0, Fed, J, merged, opened, transitioned

SINK = "json://127.0.0.1:9/hook"


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    """The process clock, frozen at T0 + 1 min."""
    frozen = FrozenClock(T0 + timedelta(minutes=1))
    set_clock(frozen)
    yield frozen
    set_clock(SystemClock())


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """The notifier's migrated database."""
    migrate.upgrade("notifier", db_url)
    database = Database(db_url, Base.metadata)
    yield database
    database.dispose()


def fed(db: Database, **config: object) -> Fed:
    """The consumer, with every station's channel the test URL and no hold."""
    return Fed(db, NotifierConfig(fallback_url=SINK, hold_seconds=0, **config))  # type: ignore[arg-type]


def rows(db: Database) -> list[Delivery]:
    """Every delivery, in id order."""
    with db.session() as session:
        return list(session.exec(select(Delivery).order_by(Delivery.id)))  # type: ignore[arg-type]


class FakeSend:
    """Records sends; answers ok or a failure."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.sent: list[tuple[str, str, str]] = []

    def __call__(self, url: str, title: str, body: str) -> tuple[bool, str]:
        self.sent.append((url, title, body))
        return (True, "") if self.ok else (False, "HTTP 503 from the robot")


def sender(db: Database, send: FakeSend, threshold: int = 5) -> Sender:
    """A sender on the database (leading: an in-process test owns the roles)."""
    return Sender(
        db, Leadership(db, "notifier", "sender"), Backoff(3, 10.0, 60.0), threshold, 1.0, False, send
    )


def metric(outcome: str) -> float:
    """gridloop_notifications_total{channel_kind="json", outcome}."""
    return (
        metrics.REGISTRY.get_sample_value(
            "gridloop_notifications_total", {"channel_kind": "json", "outcome": outcome}
        )
        or 0.0
    )


def test_an_event_makes_one_delivery_however_often_it_comes(db: Database, clock: FrozenClock) -> None:
    """Redelivered (same record) or re-driven (a new record, same id): one row; the unique (event,
    channel) refuses a second row even written by hand."""
    consumer = fed(db)
    event = opened("C-1")
    consumer.feed(event)
    consumer.feed(event, offset=1)  # a redelivery
    consumer.feed(event)  # the same id in a new record
    found = rows(db)
    assert [(d.event_id, d.channel, d.target, d.rule_id, d.status) for d in found] == [
        (event.id, SINK, "station:yh-s1", "urgent-new-case", "pending")
    ]
    with pytest.raises(IntegrityError), db.session(write=True) as session:
        copy = found[0].model_copy(update={"id": None})
        session.add(Delivery.model_validate(copy.model_dump()))


def test_rider_data_never_reaches_a_message(db: Database, clock: FrozenClock) -> None:
    """An event carrying a rider's words and reference (unknown fields are kept by the schema) still
    makes a message without them."""
    consumer = fed(db)
    consumer.feed(opened("C-2", description="井盖没了 我的电话 13800138000", rider_ref="rider-abc"))
    (delivery,) = rows(db)
    text = delivery.title + delivery.body
    assert "13800138000" not in text and "rider-abc" not in text and "井盖没了" not in text


def test_common_issue_is_told_once_and_unknown_types_are_skipped(db: Database, clock: FrozenClock) -> None:
    """The merge that makes a case a common issue notifies the centre; later merges do not; an event
    type this code does not know is skipped and counted, not dead-lettered."""
    consumer = fed(db)
    skipped_before = (
        metrics.REGISTRY.get_sample_value(
            "gridloop_events_skipped_total", {"group": "notifier", "type": "gridloop.case.levitated.v1"}
        )
        or 0.0
    )
    consumer.feed(opened("C-3", priority="normal"), merged("C-3", 2, False), merged("C-3", 3, True))
    consumer.feed(merged("C-3", 4, True))
    unknown = CloudEvent(
        id="x-1", source="gridloop/closer", type="gridloop.case.levitated.v1", time=T0, subject="C-3", data={}
    )
    consumer.feed_raw(unknown.model_dump_json().encode())
    assert [(d.event_type, d.target, d.title) for d in rows(db)] == [
        ("case.report_merged", "centre:yh-centre", "共性问题：3 位骑手上报 · 井盖缺失或破损")
    ]
    with db.session() as session:
        info = session.get(CaseInfo, "C-3")
        assert info is not None and info.common_issue
        outbox = session.exec(select(Base.metadata.tables["outbox"].c.topic)).all()
    assert outbox == []  # nothing dead-lettered
    assert (
        metrics.REGISTRY.get_sample_value(
            "gridloop_events_skipped_total", {"group": "notifier", "type": "gridloop.case.levitated.v1"}
        )
        == skipped_before + 1
    )


def test_escalation_goes_to_station_and_centre_with_case_facts(db: Database, clock: FrozenClock) -> None:
    """A transition event carries no category or place: the message takes them from the case as opened."""
    consumer = fed(db)
    consumer.feed(opened("C-4", priority="normal"))
    consumer.feed(transitioned("escalated", "C-4", CaseStatus.NEW, deadline="ack", reason="ack"))
    assert [(d.target, d.title) for d in rows(db)] == [
        ("station:yh-s1", "签收超时督办 · 井盖缺失或破损"),
    ]  # station and centre share the test URL: one delivery per event and channel


def test_a_down_channel_is_retried_with_backoff_then_failed(db: Database, clock: FrozenClock) -> None:
    """Attempts at 0 s, +10 s, +20 s (backoff 10 s doubling, 3 attempts), then failed with the error;
    counted retry twice and failed once; a failed row is not tried again."""
    fed(db).feed(opened("C-5"))
    send = FakeSend(ok=False)
    loop = sender(db, send)
    retry0, failed0 = metric("retry"), metric("failed")
    assert loop.tick().retried == 1
    clock.advance(timedelta(seconds=9))
    assert loop.tick().messages == 0  # not due yet
    clock.advance(timedelta(seconds=1))
    assert loop.tick().retried == 1
    clock.advance(timedelta(seconds=20))
    assert loop.tick().failed == 1
    clock.advance(timedelta(hours=1))
    assert loop.tick().messages == 0
    (delivery,) = rows(db)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        "failed",
        3,
        "HTTP 503 from the robot",
    )
    assert len(send.sent) == 3
    assert (metric("retry") - retry0, metric("failed") - failed0) == (2, 1)


def test_a_flood_to_one_channel_is_one_grouped_message(db: Database, clock: FrozenClock) -> None:
    """Seven urgent cases at once, threshold 5: one digest message; every row sent, digest_size 7."""
    consumer = fed(db)
    consumer.feed(*[opened(f"C-{i}") for i in range(10, 17)])
    send = FakeSend()
    sent0 = metric("sent")
    result = sender(db, send, threshold=5).tick()
    assert (result.messages, result.sent) == (1, 7)
    ((url, title, body),) = send.sent
    assert (url, title) == (SINK, "【汇总】7 条通知")
    assert body.count("/console/cases/C-1") == 7
    assert {(d.status, d.digest_size) for d in rows(db)} == {("sent", 7)}
    assert metric("sent") - sent0 == 7


def test_a_revoked_token_is_refused_after_staff_events(db: Database) -> None:
    """`staff.tokens_revoked` keeps the account's newest state (the shared gridloop.revocations rule):
    older tokens and those of a disabled account are refused, a replayed older event changes nothing."""
    handlers = Handlers(RULES, J, NotifierConfig(fallback_url=SINK, hold_seconds=0), CONSOLE)

    def revoked(version: int, active: bool, at: datetime) -> None:
        data = StaffTokensRevoked(username="yh-s1", token_version=version, active=active, at=at)
        event = make_event("staff.tokens_revoked", data, source="closer", subject="yh-s1", time=at)
        with db.session(write=True) as session:
            handlers.on_tokens_revoked(session, Incoming(event, data, "staff.events", 0, 0, "yh-s1"))

    def current(version: int) -> bool:
        return revocations.token_current(db, Principal("yh-s1", "staff", ("yh-s1",), version=version))

    assert current(0)  # never revoked: no row
    revoked(2, True, T0)
    assert (current(1), current(2)) == (False, True)
    revoked(1, True, T0 + timedelta(minutes=1))  # an older version, however late: no change
    assert (current(1), current(2)) == (False, True)
    revoked(2, False, T0 + timedelta(minutes=2))  # disabled at the same version, later
    assert current(2) is False


def test_topics_opened_and_closed_reach_the_centre(db: Database, clock: FrozenClock) -> None:
    """data/notify/rules.json's topic rule: topic.opened and topic.closed go to the topic's street's
    centre with the topic's link; cases linked and a meeting go nowhere."""
    consumer = fed(db)
    common = {"topic_id": "T1", "street_id": "yinhang", "centre_station_id": "yh-centre", "at": T0}
    events = [
        make_event(
            "topic.opened",
            TopicOpened(**common, category="shared_bikes", title="地铁口单车堆积", body="街区治理委员会",
                        case_ids=["C1", "C2", "C3"], version=1),
            source="closer", subject="T1", time=T0,
        ),
        make_event(
            "topic.cases_linked",
            TopicCasesLinked(topic_id="T1", added=["C4"], case_ids=["C1", "C4"], version=2, at=T0),
            source="closer", subject="T1", time=T0,
        ),
        make_event(
            "topic.meeting_recorded",
            TopicMeetingRecorded(topic_id="T1", meeting_id=1, held_on=T0.date(), decision="划定停放区",
                                 case_ids=["C1"], version=3, at=T0),
            source="closer", subject="T1", time=T0,
        ),
        make_event(
            "topic.closed",
            TopicClosed(**common, title="地铁口单车堆积", outcome="已划定停放区", resolves=True,
                        case_ids=["C1"], version=4),
            source="closer", subject="T1", time=T0,
        ),
    ]  # fmt: skip
    consumer.feed(*events)
    consumer.feed(events[0], offset=1)  # redelivered: still one delivery
    made = [(d.event_type, d.rule_id, d.target, d.case_id, d.title, d.link) for d in rows(db)]
    link = f"{CONSOLE}/console/topics/T1"
    assert made == [
        (
            "topic.opened",
            "topic-opened-closed",
            "centre:yh-centre",
            "T1",
            "新议题（共性问题） · 地铁口单车堆积",
            link,
        ),
        (
            "topic.closed",
            "topic-opened-closed",
            "centre:yh-centre",
            "T1",
            "议题已结束 · 地铁口单车堆积",
            link,
        ),
    ]
    closed_body = rows(db)[1].body
    assert "结论：已划定停放区" in closed_body and "案件数：1" in closed_body
