"""Idempotent consumer, dead letters, outbox and migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, select, text

from gridloop import migrate
from gridloop.consumer import RetryBatch, _Raw
from gridloop.db import Database
from gridloop.errors import ApiError
from gridloop.groupcommit import GroupCommit
from gridloop.outbox import add_event
from gridloop.rawsql import Raw, Tx, after_commit, insert_row
from gridloop.settings import REPO_ROOT
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
    # the same record again is a redelivery (no replay); the same id at a new offset is replayed
    assert seen == ["same"]


def duplicates_counted() -> float:
    """The test consumer's duplicates so far (a process-wide counter)."""
    from gridloop import metrics

    labels = {"group": "g", "topic": "reports.feedback"}
    return metrics.REGISTRY.get_sample_value("gridloop_events_duplicate_total", labels) or 0.0


def test_redelivery_is_skipped_and_a_new_record_replayed(db: Database, plain_sql: bool) -> None:
    """The same record handed out again (a replica died between its commit and its offset commit) is
    skipped without a replay; the same event id in a new record (a re-drive) is replayed once, and
    from then on that record's redelivery is skipped too; every one counts as a duplicate."""
    seen: list[str] = []
    consumer = make_consumer(db, replays=seen, plain_sql=plain_sql)
    before = duplicates_counted()
    first = feedback_raw(3, "a", event_id="e1")
    consumer.apply_batch([first])
    consumer.apply_batch([first])
    assert (applied(db), seen) == (["a"], [])
    redrive = feedback_raw(9, "a", event_id="e1")
    consumer.apply_batch([redrive])
    assert seen == ["e1"]
    consumer.apply_batch([redrive])  # the re-drive's own redelivery
    consumer.apply_batch([first, redrive])  # both again, from an older offset
    consumer.apply_batch([_Raw("reports.feedback", 1, 0, "c1", first.value)])  # another partition
    assert (applied(db), seen) == (["a"], ["e1", "e1"])
    assert duplicates_counted() - before == 6
    with db.engine.connect() as conn:
        row = conn.execute(select(TABLES.processed).where(TABLES.processed.c.event_id == "e1")).one()
    assert (row.topic, row.source_partition, row.source_offset) == ("reports.feedback", 1, 0)


def test_ledger_rows_without_a_source_replay_once(db: Database, plain_sql: bool) -> None:
    """A ledger row written before sources were kept: its id is replayed as before, once; the record
    it was replayed from is then its source, so that record's redelivery is skipped."""
    with db.transaction(write=True) as tx:
        insert_row(
            Raw(tx),
            TABLES.processed,
            {
                "event_id": "old",
                "consumer": "g",
                "topic": "reports.feedback",
                "processed_at": datetime.now(UTC),
            },
        )
    seen: list[str] = []
    consumer = make_consumer(db, replays=seen, plain_sql=plain_sql)
    record = feedback_raw(4, "old", event_id="old")
    consumer.apply_batch([record])
    consumer.apply_batch([record])
    assert (applied(db), seen) == ([], ["old"])


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


@pytest.mark.parametrize("service", ["reporter", "router", "closer", "notifier"])
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


@pytest.mark.parametrize("service", ["reporter", "router", "closer", "notifier"])
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


def test_lock_id_is_the_same_in_every_process() -> None:
    """The advisory-lock id is stable: two processes with different hash seeds print the same id."""
    from gridloop.leader import lock_id

    code = "from gridloop.leader import lock_id; print(lock_id('reporter', 'outbox'))"
    printed = set()
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            check=True,
        )
        printed.add(int(out.stdout))
    assert printed == {lock_id("reporter", "outbox")}
    assert len({lock_id(s, r) for s in ("reporter", "router") for r in ("outbox", "redrive", "prune")}) == 6


def _terminate(db: Database, pid: int) -> None:
    """pg_terminate_backend, waiting until the backend is gone: the connection dies as if its host had."""
    with db.engine.connect() as conn:
        sql = text("SELECT pg_terminate_backend(:pid, 10000)")
        assert conn.execute(sql, {"pid": pid}).scalar() is True
        conn.commit()


def test_one_leader_per_role_and_takeover(db: Database) -> None:
    """Two processes' leaderships of one role: exactly one leads; when it goes (released, or its lock
    connection killed on PostgreSQL) the other takes over, in a new term; another role is separate."""
    from gridloop import metrics
    from gridloop.leader import Leadership

    a, b = Leadership(db, "test", "outbox"), Leadership(db, "test", "outbox")
    gauge = {"service": "test", "role": "outbox"}  # one process holds both here: the last check shows
    other = Leadership(db, "test", "redrive")
    try:
        assert [a.check(), b.check(), a.check(), b.check()] == [True, False, True, False]
        assert other.check() is True  # another role, another lock
        assert (a.term, b.term) == (1, 0)
        assert metrics.REGISTRY.get_sample_value("gridloop_leader", gauge) == 0
        if db.url.startswith("sqlite"):
            a.release()
        else:
            _terminate(db, a.connection_pid())
            assert a.check() is False  # the dead connection is the lost lock
        assert b.check() is True and b.term == 1
        assert a.check() is False and a.term == 1
        assert metrics.REGISTRY.get_sample_value("gridloop_leader", gauge) == 0
        b.release()
        assert a.check() is True and a.term == 2
    finally:
        for leadership in (a, b, other):
            leadership.release()


def test_pruning_keeps_unsent_and_recent_rows(db: Database) -> None:
    """Sent outbox rows past retention and ledger rows past the dedup window go, in bounded batches;
    unsent rows (however old) and recent rows stay; a replica that does not lead prunes nothing."""
    from gridloop import metrics
    from gridloop.leader import Leadership
    from gridloop.pruning import Pruner

    now = datetime.now(UTC)
    day = timedelta(days=1)
    with db.transaction(write=True) as tx:
        raw = Raw(tx)
        for i in range(25):
            old = i < 10  # 10 sent two days ago, 5 sent just now, 10 never sent (created long ago)
            sent = now - 2 * day if old else (now if i < 15 else None)
            insert_row(
                raw,
                TABLES.outbox,
                {
                    "event_id": f"e{i}",
                    "topic": "t",
                    "payload": "{}",
                    "created_at": now - 30 * day,
                    "sent_at": sent,
                    "attempts": 0,
                },
            )
        for i in range(12):
            at = now - 20 * day if i < 7 else now - 13 * day
            insert_row(
                raw,
                TABLES.processed,
                {"event_id": f"p{i}", "consumer": "g", "topic": "t", "processed_at": at},
            )
    mine, theirs = Leadership(db, "prunetest", "prune"), Leadership(db, "prunetest", "prune")

    def pruned(table: str) -> float:
        labels = {"service": "prunetest", "table": table}
        return metrics.REGISTRY.get_sample_value("gridloop_pruned_rows_total", labels) or 0.0

    before = {table: pruned(table) for table in ("outbox", "processed_events")}

    def pruner(leadership: Leadership) -> Pruner:
        return Pruner(db, "prunetest", leadership, outbox_retain=day, dedup_window=14 * day, batch=4)

    try:
        assert pruner(mine).prune_once() == {"outbox": 4, "processed_events": 4}
        assert pruner(theirs).prune_once() is None
        assert pruner(mine).prune_once() == {"outbox": 4, "processed_events": 3}
        assert pruner(mine).prune_once() == {"outbox": 2, "processed_events": 0}
        assert pruner(mine).prune_once() == {"outbox": 0, "processed_events": 0}
    finally:
        mine.release()
        theirs.release()
    rows = outbox_rows(db)
    assert sorted(int(str(r["event_id"])[1:]) for r in rows) == list(range(10, 25))
    assert sum(r["sent_at"] is None for r in rows) == 10
    with db.engine.connect() as conn:
        left = sorted(r.event_id for r in conn.execute(select(TABLES.processed.c.event_id)))
    assert left == ["p10", "p11", "p7", "p8", "p9"]
    assert {table: pruned(table) - n for table, n in before.items()} == {"outbox": 10, "processed_events": 7}


def test_pruning_pause() -> None:
    """A pass that deleted a full batch of a table goes on at once; otherwise it waits the interval."""
    from gridloop.pruning import pause_after

    assert pause_after({"outbox": 4, "processed_events": 1}, 4, 60.0) == 0.0
    assert pause_after({"outbox": 3, "processed_events": 0}, 4, 60.0) == 60.0
