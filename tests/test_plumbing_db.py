"""Idempotent consumer, dead letters, outbox and migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, String, Table, inspect, select
from sqlmodel import Session

from gridloop import migrate
from gridloop.consumer import IdempotentConsumer, Incoming, RetryBatch, _Raw
from gridloop.db import Database, service_base
from gridloop.outbox import add_event
from gridloop.plumbing import define_plumbing
from schemas.events import ReportFeedback, make_event

Base = service_base("plumbingtest")
TABLES = define_plumbing(Base.metadata)
APPLIED = Table(
    "applied", Base.metadata, Column("event_id", String(64), primary_key=True), Column("comment", String(100))
)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A fresh database with the plumbing tables and a table the handler writes to."""
    database = Database(db_url, Base.metadata)
    database.create_all()
    yield database
    database.dispose()


def feedback_raw(offset: int, comment: str = "ok", event_id: str | None = None) -> _Raw:
    """A `report.feedback` message as it would come off the topic."""
    data = ReportFeedback(
        report_id="r1", case_id="c1", fixed=True, comment=comment, at=datetime(2026, 11, 24, tzinfo=UTC)
    )
    event = make_event(
        "report.feedback",
        data,
        source="reporter",
        subject="c1",
        time=datetime(2026, 11, 24, tzinfo=UTC),
        event_id=event_id,
    )
    return _Raw("reports.feedback", 0, offset, "c1", event.model_dump_json().encode())


def make_consumer(
    db: Database, fail_on: str | None = None, replays: list[str] | None = None
) -> IdempotentConsumer:
    """A consumer whose handler records each event (and fails on one comment, if asked)."""

    def handler(session: Session, item: Incoming) -> None:
        comment = item.data.comment  # type: ignore[attr-defined]
        if comment == fail_on:
            raise ValueError("cannot apply this one")
        session.execute(APPLIED.insert().values(event_id=item.event.id, comment=comment))

    def replay(_session: Session, item: Incoming) -> None:
        if replays is not None:
            replays.append(item.event.id)

    return IdempotentConsumer(
        group="g",
        topics=["reports.feedback"],
        db=db,
        tables=TABLES,
        handlers={"report.feedback": handler},
        replays={"report.feedback": replay},
        service="test",
        attempts=3,
    )


def applied(db: Database) -> list[str]:
    """Comments of the applied events, in order."""
    with db.engine.connect() as conn:
        return [r.comment for r in conn.execute(select(APPLIED.c.comment).order_by(APPLIED.c.comment))]


def outbox_rows(db: Database) -> list[dict[str, object]]:
    """Everything in the outbox."""
    with db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(TABLES.outbox).order_by(TABLES.outbox.c.id))]


def test_redelivered_event_is_applied_once(db: Database) -> None:
    """The same event id in a later batch, or twice in one batch, changes nothing the second time."""
    seen: list[str] = []
    consumer = make_consumer(db, replays=seen)
    a = feedback_raw(0, "a")
    consumer.apply_batch([a])
    consumer.apply_batch([a, feedback_raw(1, "b")])
    consumer.apply_batch([feedback_raw(2, "c", event_id="same"), feedback_raw(3, "c", event_id="same")])
    assert applied(db) == ["a", "b", "c"]
    assert len(seen) == 2  # the replay hook saw both redeliveries


def test_poison_message_goes_to_deadletter_and_batch_goes_on(db: Database) -> None:
    """An unparseable message is dead-lettered through the outbox; the next one is applied."""
    consumer = make_consumer(db)
    poison = _Raw("reports.feedback", 0, 7, "c1", b"{not json")
    consumer.apply_batch([poison, feedback_raw(8, "after")])
    assert applied(db) == ["after"]
    [row] = outbox_rows(db)
    assert row["topic"] == "deadletter" and row["key"] == "c1"
    letter = json.loads(str(row["payload"]))
    assert letter["type"] == "gridloop.deadletter.message.v1"
    assert letter["data"]["original"] == "{not json" and letter["data"]["offset"] == 7
    assert letter["data"]["consumer"] == "g" and "unparseable" in letter["data"]["error"]


def test_failing_handler_retries_then_dead_letters(db: Database) -> None:
    """A handler that keeps failing: the batch is retried, then that message is dead-lettered."""
    consumer = make_consumer(db, fail_on="bad")
    batch = [feedback_raw(0, "good1"), feedback_raw(1, "bad"), feedback_raw(2, "good2")]
    for _ in range(2):
        with pytest.raises(RetryBatch):
            consumer.apply_batch(batch)
        assert applied(db) == []  # nothing half-written
    consumer.apply_batch(batch)
    assert applied(db) == ["good1", "good2"]
    [row] = outbox_rows(db)
    letter = json.loads(str(row["payload"]))["data"]
    assert letter["attempts"] == 3 and "cannot apply this one" in letter["error"]
    consumer.apply_batch(batch)  # redelivery after the dead letter: nothing new
    assert applied(db) == ["good1", "good2"] and len(outbox_rows(db)) == 1


def test_outbox_row_commits_with_the_state_change(db: Database) -> None:
    """An outbox row written in a failed transaction is gone with it."""
    event = make_event(
        "report.feedback",
        ReportFeedback(report_id="r", case_id="c", fixed=False, at=datetime(2026, 11, 24, tzinfo=UTC)),
        source="reporter",
        subject="c",
        time=datetime(2026, 11, 24, tzinfo=UTC),
    )
    with pytest.raises(RuntimeError), db.session(write=True) as session:
        add_event(session, TABLES, "reports.feedback", "c", event)
        raise RuntimeError("the state change failed")
    assert outbox_rows(db) == []
    with db.session(write=True) as session:
        add_event(session, TABLES, "reports.feedback", "c", event)
    [row] = outbox_rows(db)
    assert row["event_id"] == event.id and row["sent_at"] is None


@pytest.mark.parametrize("service", ["reporter", "router", "closer"])
def test_migrations_create_the_models_tables(db_url: str, service: str) -> None:
    """`db upgrade` builds exactly the tables the models declare, and is safe to run twice."""
    migrate.upgrade(service, db_url)
    migrate.upgrade(service, db_url)
    database = Database(db_url, migrate.service_metadata(service))
    try:
        tables = set(inspect(database.engine).get_table_names()) - {"alembic_version"}
        assert tables == set(database.metadata.tables)
    finally:
        database.dispose()
