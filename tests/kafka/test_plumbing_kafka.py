"""Outbox relay and idempotent consumer against a real Apache Kafka broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream.kafka import KafkaBroker
from sqlalchemy import func, select, text

from gridloop.brokers import KafkaCluster, free_ports
from gridloop.db import Database
from gridloop.outbox import OUTBOX_HEADER, OutboxRelay, add_event
from gridloop.topics import ensure_topics
from schemas.events import ReportFeedback, make_event
from tests.support.databases import new_pg_database
from tests.support.plumbing import APPLIED, TABLES, Base, applied, feedback_raw, make_consumer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def feedback_event(i: int) -> object:
    """A distinct event to put through the outbox."""
    data = ReportFeedback(
        report_id=f"r{i}",
        case_id=f"c{i % 3}",
        fixed=True,
        comment=str(i),
        at=datetime(2026, 11, 24, tzinfo=UTC),
    )
    return make_event(
        "report.feedback",
        data,
        source="reporter",
        subject=f"c{i % 3}",
        time=datetime(2026, 11, 24, tzinfo=UTC),
    )


def pending(db: Database) -> int:
    """Outbox rows not yet acknowledged."""
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(TABLES.outbox).where(TABLES.outbox.c.sent_at.is_(None))
            ).scalar_one()
        )


async def read_all(bootstrap: str, topic: str, expect: int, wait: float = 30) -> list[bytes]:
    """Read a topic from the beginning until `expect` messages arrived."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        deadline = time.monotonic() + wait
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out += [r.value for r in records]
    finally:
        await consumer.stop()
    return out


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaCluster]:
    """A broker of this test's own, on fixed ports, that the test may stop and start."""
    cluster = KafkaCluster(tmp_path / "kafka", brokers=1, ports=free_ports(2), log_dir=tmp_path / "logs")
    cluster.start()
    yield cluster
    cluster.stop()


async def test_relay_survives_broker_outage_and_drains(own_kafka: KafkaCluster, tmp_path: Path) -> None:
    """Rows written while the broker is down wait in the outbox and leave, in order, when it is back."""
    bootstrap = own_kafka.bootstrap_servers
    ensure_topics(bootstrap, partitions=3)
    db = Database(f"sqlite:///{tmp_path / 'relay.db'}", Base.metadata)
    db.create_all()
    relay = OutboxRelay(db, TABLES, bootstrap, "test", batch=50, poll_seconds=0.1)
    await relay.start()
    try:
        with db.session(write=True) as session:
            for i in range(10):
                add_event(session, TABLES, "reports.feedback", f"c{i % 3}", feedback_event(i))  # type: ignore[arg-type]
        relay.wake()
        for _ in range(100):
            if pending(db) == 0:
                break
            await asyncio.sleep(0.1)
        assert pending(db) == 0

        await asyncio.to_thread(own_kafka.stop)
        with db.session(write=True) as session:  # intake goes on while the broker is down
            for i in range(10, 40):
                add_event(session, TABLES, "reports.feedback", f"c{i % 3}", feedback_event(i))  # type: ignore[arg-type]
        relay.wake()
        await asyncio.sleep(3)
        assert pending(db) == 30  # nothing marked sent without an acknowledgement

        await asyncio.to_thread(own_kafka.start)
        for _ in range(300):
            if pending(db) == 0:
                break
            await asyncio.sleep(0.1)
        assert pending(db) == 0
    finally:
        await relay.stop()
    values = await read_all(bootstrap, "reports.feedback", 40)
    comments = [json.loads(v)["data"]["comment"] for v in values]
    assert sorted(comments, key=int) == [str(i) for i in range(40)]
    for key in range(3):  # per key (partition) the order is the outbox order
        mine = [int(c) for c in comments if int(c) % 3 == key]
        assert mine == sorted(mine)
    db.dispose()


async def test_consumer_dead_letters_poison_and_applies_once(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """On a real broker: a poison message lands in `deadletter`, the next message on the partition
    is applied, and a redelivered event id is applied once."""
    ensure_topics(kafka_bootstrap, partitions=2, prefix=topic_prefix)
    db = Database(f"sqlite:///{tmp_path / 'consumer.db'}", Base.metadata)
    db.create_all()
    consumer = make_consumer(db)
    relay = OutboxRelay(db, TABLES, kafka_bootstrap, "test", poll_seconds=0.1, topic_prefix=topic_prefix)
    consumer.after_commit = relay.wake
    broker = KafkaBroker(kafka_bootstrap)
    consumer.subscribe(broker, fetch_max_wait_ms=50, session_timeout_ms=6000, topic_prefix=topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    topic = topic_prefix + "reports.feedback"
    first = feedback_raw(0, "first")
    for value in (first.value, b"\x00garbage", feedback_raw(2, "next").value, first.value):
        await producer.send_and_wait(topic, value, key=b"c1")  # one key: one partition, in this order
    await producer.stop()
    await relay.start()
    await broker.start()
    try:
        for _ in range(300):
            if applied(db) == ["first", "next"] and pending(db) == 0 and consumer.batches:
                break
            await asyncio.sleep(0.1)
        letters = await read_all(kafka_bootstrap, topic_prefix + "deadletter", 1)
    finally:
        await broker.stop()
        await relay.stop()
    assert applied(db) == ["first", "next"]
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(APPLIED)).scalar_one() == 2
    [letter] = [json.loads(v) for v in letters]
    assert letter["data"]["original"].endswith("garbage") and letter["data"]["topic"] == "reports.feedback"
    db.dispose()


async def read_to_end(bootstrap: str, topic: str) -> list[tuple[str, bytes]]:
    """Every record of a topic up to its end offsets now, as (outbox header, value): an exact count."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 30
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, "the topic was not read to its end in 30 s"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += [(dict(r.headers)[OUTBOX_HEADER].decode(), r.value) for r in records]
    finally:
        await consumer.stop()
    return out


def queue(db: Database, numbers: range) -> None:
    """Outbox rows of distinct events, keyed over three cases."""
    with db.session(write=True) as session:
        for i in numbers:
            add_event(session, TABLES, "reports.feedback", f"c{i % 3}", feedback_event(i))  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], what: str, wait: float = 30) -> None:
    """Poll until the condition holds."""
    deadline = time.monotonic() + wait
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.postgres
async def test_two_relays_one_leader_each_row_once_across_a_takeover(
    kafka_bootstrap: str, topic_prefix: str, pg_server_url: str
) -> None:
    """Two relays (replicas) on one PostgreSQL service database: one sends; its lock connection is
    killed (pg_terminate_backend); it stops, the other takes over; every row reaches Kafka once."""
    ensure_topics(kafka_bootstrap, partitions=3, prefix=topic_prefix)
    url = new_pg_database(pg_server_url)
    dbs = [Database(url, Base.metadata) for _ in range(2)]
    dbs[0].create_all()
    relays = [
        OutboxRelay(
            db,
            TABLES,
            kafka_bootstrap,
            "test",
            batch=20,
            poll_seconds=0.05,
            topic_prefix=topic_prefix,
            idempotence=True,  # Apache Kafka
            follow_seconds=0.2,
            takeover_grace=0.5,
        )
        for db in dbs
    ]
    queue(dbs[0], range(100))
    for relay in relays:
        await relay.start()
    try:
        await until(lambda: pending(dbs[0]) == 0, "the first 100 rows sent")
        [leader] = [r for r in relays if r.leadership.held]
        [other] = [r for r in relays if r is not leader]
        assert other.leadership.term == 0  # never led
        pid = await asyncio.to_thread(leader.leadership.connection_pid)
        with dbs[0].engine.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid}).scalar()
            conn.commit()
        queue(dbs[0], range(100, 300))
        for relay in relays:
            relay.wake()
        await until(lambda: pending(dbs[0]) == 0, "the next 200 rows sent")
        assert other.leadership.held and other.leadership.term == 1
        assert not leader.leadership.held
    finally:
        for relay in relays:
            await relay.stop()
        for db in dbs:
            db.dispose()
    records = await read_to_end(kafka_bootstrap, topic_prefix + "reports.feedback")
    comments = sorted(int(json.loads(value)["data"]["comment"]) for _, value in records)
    assert comments == list(range(300))  # each row exactly once: none lost, none doubled


async def test_new_leader_marks_what_the_dead_one_sent_without_resending(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A leader that sent rows and died before marking them sent: the next leader finds them on the
    broker (the tail of their partitions), marks them sent and does not send them again."""
    ensure_topics(kafka_bootstrap, partitions=3, prefix=topic_prefix)
    db = Database(f"sqlite:///{tmp_path / 'relay.db'}", Base.metadata)
    db.create_all()

    def relay() -> OutboxRelay:
        return OutboxRelay(
            db, TABLES, kafka_bootstrap, "test", batch=50, topic_prefix=topic_prefix, takeover_grace=0.1
        )

    queue(db, range(30))
    dead = relay()
    dead._mark_sent = lambda ids: None  # type: ignore[method-assign]  # it dies before marking
    assert await dead.drain_once() == 0  # its own takeover: nothing on the broker yet
    assert await dead.drain_once() == 30
    await dead.stop()  # gone: its lock with it
    assert pending(db) == 30
    queue(db, range(30, 40))
    heir = relay()
    await heir.start()
    try:
        await until(lambda: pending(db) == 0, "all 40 rows marked sent")
    finally:
        await heir.stop()
    assert heir.reconciled_rows == 30
    records = await read_to_end(kafka_bootstrap, topic_prefix + "reports.feedback")
    comments = sorted(int(json.loads(value)["data"]["comment"]) for _, value in records)
    assert comments == list(range(40))
    assert len({mark for mark, _ in records}) == 40  # one header per outbox row
    db.dispose()
