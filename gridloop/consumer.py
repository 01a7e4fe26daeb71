"""Idempotent batch consumer: apply a batch in one transaction, record event ids, commit, then ack.

Guarantees (DESIGN.md "Nothing is lost"):
- the Kafka offset is committed only after the database transaction that applied the batch;
- an event id this consumer already applied is skipped (its optional `replay` hook may re-emit the
  stored result, which is how unfinished work is driven again after a broker lost its messages);
- a message that cannot be parsed goes to `deadletter` at once; one whose handler keeps failing goes
  there after `attempts` tries; either way the partition moves on. Dead letters leave through the
  outbox, in the same transaction, so they cannot be lost either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, TopicPartition
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy import select
from sqlmodel import Session

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.db import Database, cached_insert
from gridloop.outbox import add_raw
from gridloop.plumbing import PlumbingTables
from schemas.envelope import CloudEvent, new_event_id
from schemas.events import DeadLetter, EventData, parse_data

log = logging.getLogger(__name__)

DEADLETTER_TOPIC = "deadletter"


@dataclass
class Incoming:
    """One parsed message: the envelope, its typed data and where it came from."""

    event: CloudEvent
    data: EventData
    topic: str
    partition: int
    offset: int
    key: str | None


Handler = Callable[[Session, Incoming], None]


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run callback once the consumer's batch transaction has committed (e.g. a latency metric)."""
    callbacks = session.info.get("after_commit")
    if callbacks is None:
        callback()  # not inside a consumer batch: nothing to wait for
    else:
        callbacks.append(callback)


class RetryBatch(Exception):
    """A handler failed but has attempts left: roll back, rewind, try the batch again."""


@dataclass
class _Raw:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes


def _raw(record: ConsumerRecord[Any, Any], prefix: str = "") -> _Raw:
    key = record.key.decode(errors="replace") if isinstance(record.key, bytes) else record.key
    value = record.value if isinstance(record.value, bytes) else json.dumps(record.value).encode()
    return _Raw(record.topic.removeprefix(prefix), record.partition, record.offset, key, value)


def parse_record(raw: _Raw) -> Incoming:
    """Parse a record into an envelope and its typed data; raises on anything malformed."""
    event = CloudEvent.model_validate_json(raw.value)
    return Incoming(event, parse_data(event), raw.topic, raw.partition, raw.offset, raw.key)


class IdempotentConsumer:
    """A consumer group whose effects and processed-event ledger commit in one transaction."""

    def __init__(
        self,
        *,
        group: str,
        topics: list[str],
        db: Database,
        tables: PlumbingTables,
        handlers: Mapping[str, Handler],
        replays: Mapping[str, Handler] | None = None,
        service: str,
        attempts: int = 3,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.group = group
        self.topics = topics
        self.db = db
        self.tables = tables
        self.handlers = handlers
        self.replays = replays or {}
        self.service = service
        self.max_attempts = attempts
        self.after_commit = after_commit
        self._failures: dict[str, int] = defaultdict(int)
        self.batches = 0
        self.topic_prefix = ""

    def subscribe(
        self,
        broker: KafkaBroker,
        *,
        max_records: int = 500,
        fetch_max_wait_ms: int = 50,
        session_timeout_ms: int = 10_000,
        topic_prefix: str = "",
    ) -> None:
        """Register this consumer as a FastStream batch subscriber with manual acknowledgement."""
        self.topic_prefix = topic_prefix
        subscriber = broker.subscriber(
            *(topic_prefix + t for t in self.topics),
            # the prefix separates groups as it separates topics (several deployments on one cluster)
            group_id=topic_prefix + self.group,
            batch=True,
            max_records=max_records,
            batch_timeout_ms=max(fetch_max_wait_ms, 10),
            fetch_max_wait_ms=fetch_max_wait_ms,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(session_timeout_ms // 5, 500),
            ack_policy=AckPolicy.MANUAL,
            title=f"{self.group}:{','.join(self.topics)}",
        )

        async def handle(body: list[Any], msg: KafkaMessage) -> None:
            """Apply a batch of events idempotently, then commit the offsets."""
            await self.process(msg)

        subscriber(handle)
        self.subscriber = subscriber

    def highwaters(self) -> dict[tuple[str, int], int]:
        """High watermarks seen by this process's consumer, per (topic on the broker, partition)."""
        consumer = getattr(getattr(self, "subscriber", None), "consumer", None)
        if consumer is None:
            return {}
        out: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is not None:
                out[(tp.topic, tp.partition)] = hw
        return out

    async def process(self, msg: Any) -> None:
        """Apply one FastStream batch message; ack after commit, rewind on a transient failure."""
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        raws = [_raw(r, self.topic_prefix) for r in records]
        if not raws:
            return
        try:
            await asyncio.to_thread(self.apply_batch, raws)
        except Exception as exc:
            # nothing was committed: rewind to the batch start and try again after a pause
            log.warning("%s: batch of %d failed (%s); will retry", self.group, len(raws), exc)
            await msg.nack()
            await asyncio.sleep(min(0.2 * 2 ** max(self._failures.values(), default=0), 5.0))
            return
        await msg.ack()
        self.batches += 1
        if self.after_commit:
            self.after_commit()

    def apply_batch(self, raws: list[_Raw]) -> None:
        """Apply parsed events and dead-letter the rest, all in one transaction (runs in a thread)."""
        parsed: list[Incoming] = []
        dead: list[tuple[_Raw, str, int]] = []
        for raw in raws:
            try:
                parsed.append(parse_record(raw))
            except Exception as exc:
                dead.append((raw, f"unparseable: {exc}", 1))
        pt = self.tables.processed
        callbacks: list[Callable[[], None]] = []
        with self.db.session(write=True) as session:
            session.info["after_commit"] = callbacks
            ids = [p.event.id for p in parsed]
            seen: set[str] = set()
            if ids:
                seen = set(
                    session.execute(
                        select(pt.c.event_id).where(pt.c.consumer == self.group, pt.c.event_id.in_(ids))
                    ).scalars()
                )
            now = utcnow()
            applied: list[dict[str, Any]] = []
            for item in parsed:
                if item.event.id in seen:
                    metrics.events_duplicate.labels(self.group, item.topic).inc()
                    replay = self.replays.get(item.event.name)
                    if replay:
                        with session.begin_nested():
                            replay(session, item)
                    continue
                seen.add(item.event.id)
                handler = self.handlers.get(item.event.name)
                if handler is not None:
                    try:
                        with session.begin_nested():
                            handler(session, item)
                    except Exception as exc:
                        self._failures[item.event.id] += 1
                        tries = self._failures[item.event.id]
                        if tries < self.max_attempts:
                            raise RetryBatch(f"{item.event.type} {item.event.id}: {exc}") from exc
                        detail = "".join(traceback.format_exception_only(exc)).strip()
                        raw = next(
                            r for r in raws if (r.partition, r.offset) == (item.partition, item.offset)
                        )
                        dead.append((raw, detail, tries))
                        self._failures.pop(item.event.id, None)
                applied.append(
                    {
                        "event_id": item.event.id,
                        "consumer": self.group,
                        "topic": item.topic,
                        "processed_at": now,
                    }
                )
                if handler is not None:
                    metrics.events_consumed.labels(self.group, item.topic).inc()
            if applied:  # one executemany for the whole batch's ledger rows
                session.connection().execute(cached_insert(pt), applied)
            for raw, error, tries in dead:
                self._dead_letter(session, raw, error, tries)
        for callback in callbacks:
            callback()

    def _dead_letter(self, session: Session, raw: _Raw, error: str, attempts: int) -> None:
        data = DeadLetter(
            consumer=self.group,
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key,
            error=error[:4000],
            attempts=attempts,
            original=raw.value.decode(errors="replace"),
        )
        envelope = CloudEvent(
            id=new_event_id(),
            source=f"gridloop/{self.service}",
            type="gridloop.deadletter.message.v1",
            time=utcnow(),
            subject=f"{raw.topic}/{raw.partition}/{raw.offset}",
            data=data.model_dump(mode="json"),
        )
        add_raw(session, self.tables, DEADLETTER_TOPIC, raw.key, envelope.id, envelope.model_dump_json())
        metrics.deadletter_total.labels(raw.topic).inc()
        log.error("%s: dead-lettered %s/%d/%d: %s", self.group, raw.topic, raw.partition, raw.offset, error)


__all__ = ["DEADLETTER_TOPIC", "Handler", "IdempotentConsumer", "Incoming", "TopicPartition"]
