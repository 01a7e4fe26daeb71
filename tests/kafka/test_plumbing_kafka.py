"""Outbox relay and idempotent consumer against a real Apache Kafka broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream.kafka import KafkaBroker
from sqlalchemy import func, select

from gridloop.brokers import KafkaCluster, free_ports
from gridloop.db import Database
from gridloop.outbox import OutboxRelay, add_event
from gridloop.topics import ensure_topics
from schemas.events import ReportFeedback, make_event
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
