"""Idempotent consumer, dead letters, outbox and migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import inspect, select

from gridloop import migrate
from gridloop.consumer import RetryBatch, _Raw
from gridloop.db import Database
from gridloop.errors import ApiError
from gridloop.groupcommit import GroupCommit
from gridloop.outbox import add_event
from gridloop.rawsql import Raw, Tx, after_commit, insert_row
from schemas.events import ReportFeedback, make_event
from tests.support.plumbing import APPLIED, TABLES, Base, applied, feedback_raw, make_consumer


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A fresh database with the plumbing tables and a table the handler writes to."""
    database = Database(db_url, Base.metadata)
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture(params=[False, True], ids=["orm", "plain_sql"])
def plain_sql(request: pytest.FixtureRequest) -> bool:
    """Consumers run their batches in an ORM session, or (plain_sql) in a Tx."""
    return bool(request.param)


def outbox_rows(db: Database) -> list[dict[str, object]]:
    """Everything in the outbox."""
    with db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(TABLES.outbox).order_by(TABLES.outbox.c.id))]


def test_redelivered_event_is_applied_once(db: Database, plain_sql: bool) -> None:
    """The same event id in a later batch, or twice in one batch, changes nothing the second time."""
    seen: list[str] = []
    consumer = make_consumer(db, replays=seen, plain_sql=plain_sql)
    a = feedback_raw(0, "a")
    consumer.apply_batch([a])
    consumer.apply_batch([a, feedback_raw(1, "b")])
    consumer.apply_batch([feedback_raw(2, "c", event_id="same"), feedback_raw(3, "c", event_id="same")])
    assert applied(db) == ["a", "b", "c"]
    assert len(seen) == 2  # the replay hook saw both redeliveries


def test_poison_message_goes_to_deadletter_and_batch_goes_on(db: Database, plain_sql: bool) -> None:
    """An unparseable message is dead-lettered through the outbox; the next one is applied."""
    consumer = make_consumer(db, plain_sql=plain_sql)
    poison = _Raw("reports.feedback", 0, 7, "c1", b"{not json")
    consumer.apply_batch([poison, feedback_raw(8, "after")])
    assert applied(db) == ["after"]
    [row] = outbox_rows(db)
    assert row["topic"] == "deadletter" and row["key"] == "c1"
    letter = json.loads(str(row["payload"]))
    assert letter["type"] == "gridloop.deadletter.message.v1"
    assert letter["data"]["original"] == "{not json" and letter["data"]["offset"] == 7
    assert letter["data"]["consumer"] == "g" and "unparseable" in letter["data"]["error"]


def test_failing_handler_retries_then_dead_letters(db: Database, plain_sql: bool) -> None:
    """A handler that keeps failing: the batch is retried, then that message is dead-lettered.

    The batch is applied straight through first; the failure sends it to a careful pass, a
    savepoint per event, which counts the attempts; the good events are applied exactly once."""
    consumer = make_consumer(db, fail_on="bad", plain_sql=plain_sql)
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
    database = Database(db_url, importlib.import_module(f"services.{service}.models").Base.metadata)
    try:
        tables = set(inspect(database.engine).get_table_names()) - {"alembic_version"}
        assert tables == set(database.metadata.tables)
    finally:
        database.dispose()


def test_group_commit_keeps_each_answer_its_own(db: Database) -> None:
    """Works sharing a transaction: a refusal (ApiError) costs the others nothing; a work that hits a
    unique key sends the batch to a careful pass (a savepoint each), is run once more after the winner
    committed, and fails alone; everyone else's rows are stored once."""

    counted: list[str] = []

    def insert(event_id: str) -> Callable[[Tx], str]:
        def work(tx: Tx) -> str:
            insert_row(Raw(tx), "applied", {"event_id": event_id, "comment": "c"})
            after_commit(tx, lambda: counted.append(event_id))  # as intake counts a stored report
            return event_id

        return work

    def refuse(tx: Tx) -> str:
        raise ApiError(422, "invalid", "no")

    calls = 0

    def lost_a_race(tx: Tx) -> str:
        # as intake when another replica stored the same Idempotency-Key first: the driver's own
        # unique-key error, until the winner has committed
        nonlocal calls
        calls += 1
        if calls <= 2:  # the straight pass, then the careful one
            raise db.integrity_errors[-1]("duplicate key value violates unique constraint")
        return "answered as the winner"

    commit = GroupCommit(db)

    async def burst(*works: Callable[[Tx], str]) -> list[Any]:
        return list(await asyncio.gather(*(commit.run(w) for w in works), return_exceptions=True))

    ok_a, refused, retried, ok_b = asyncio.run(burst(insert("a"), refuse, lost_a_race, insert("b")))
    assert (ok_a, ok_b) == ("a", "b")
    assert retried == "answered as the winner" and calls == 3
    dup, ok_c = asyncio.run(burst(insert("a"), insert("c")))
    assert ok_c == "c"
    # after-commit effects once per stored row, however many passes a batch took; none for the duplicate
    assert sorted(counted) == ["a", "b", "c"]
    assert isinstance(refused, ApiError)
    assert isinstance(dup, db.integrity_errors)
    with db.engine.connect() as conn:
        assert sorted(r.event_id for r in conn.execute(select(APPLIED.c.event_id))) == ["a", "b", "c"]


@pytest.mark.parametrize("service", ["reporter", "router", "closer"])
def test_migrations_match_the_models(db_url: str, service: str) -> None:
    """After `db upgrade` Alembic finds nothing to add or drop: columns and indexes as the models say."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrate.upgrade(service, db_url)
    database = Database(db_url, importlib.import_module(f"services.{service}.models").Base.metadata)
    try:
        with database.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), database.metadata)
    finally:
        database.dispose()
    assert diff == []
