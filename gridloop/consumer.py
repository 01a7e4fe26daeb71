"""Idempotent batch consumer: apply a batch in one transaction, record event ids, commit, then ack.

Guarantees (docs/architecture.md, "Nothing is lost"):
- the Kafka offset is committed only after the database transaction that applied the batch;
- an event id this consumer already applied is skipped. A redelivered record (the same partition, at
  or before the offset the id was last handled from: `gridloop.redelivery`) is only counted as a
  duplicate; a new record with that id (a re-drive, the same event published again) also calls the
  optional `replay` hook, which may re-emit the stored result: that is how unfinished work is driven
  again after a broker lost its messages, without a duplicate on every redelivery;
- a message that cannot be parsed goes to `deadletter` at once; one whose handler keeps failing goes
  there after `attempts` tries; either way the partition moves on. Dead letters leave through the
  outbox, in the same transaction, so they cannot be lost either;
- a consumer made with `skip_unknown` skips (and counts) a well-formed event of a type this code does
  not know, instead of dead-lettering it: a topic another service adds types to (the notifier on
  `cases.events`) needs no release of the consumer first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, TopicPartition
from faststream.kafka.annotations import KafkaMessage
from sqlmodel import Session

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.db import Database
from gridloop.logs import envelope_ids, event_ids, log_context
from gridloop.outbox import add_raw
from gridloop.plumbing import PlumbingTables
from gridloop.rawsql import Raw, Tx, after_commit, in_list, insert_sql, savepoint, statement
from gridloop.redelivery import Place, is_redelivery
from schemas.envelope import CloudEvent, new_event_id
from schemas.events import DeadLetter, EventData, UnknownEventType, parse_data

log = logging.getLogger(__name__)

DEADLETTER_TOPIC = "deadletter"
_LEDGER_INSERT = statement(
    insert_sql(
        "processed_events",
        ("event_id", "consumer", "topic", "source_partition", "source_offset", "processed_at"),
    )
)
# a new record of an id already applied (replayed): the next redelivery of it is then recognised
_LEDGER_MOVE = statement(
    "UPDATE processed_events SET topic = :topic, source_partition = :source_partition, "
    "source_offset = :source_offset WHERE event_id = :event_id AND consumer = :consumer"
)
# `(:ids)` becomes the batch's IN list (registered whole, so the statement test checks the columns)
_LEDGER_SEEN = statement(
    "SELECT event_id, topic, source_partition, source_offset FROM processed_events "
    "WHERE consumer = :consumer AND event_id IN (:ids)"
)


@dataclass
class Incoming:
    """One parsed message: the envelope, its typed data and where it came from."""

    event: CloudEvent
    data: EventData
    topic: str
    partition: int
    offset: int
    key: str | None


Handler = Callable[[Any, Incoming], None]
"""Applies one event in the batch's transaction: an ORM Session, or a Tx when the consumer is plain_sql."""


async def _undecoded(msg: Any) -> Any:
    """The batch's message values as bytes (a FastStream decoder that does not decode)."""
    return msg.body


def _settle(session: Session | Tx) -> None:
    """Write out and forget what an ORM handler left in the session, so the next handler, which may
    use plain SQL on the same rows (``gridloop.rawsql``), neither misses those changes nor has the
    ORM later overwrite its own with a stale object."""
    if isinstance(session, Session) and (session.new or session.deleted or len(session.identity_map)):
        session.flush()
        session.expunge_all()


def _source(place: Place) -> dict[str, Any]:
    """A ledger row's source columns: where its event id was last handled from."""
    return {"topic": place.topic, "source_partition": place.partition, "source_offset": place.offset}


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
        plain_sql: bool = False,
        on_begin: Callable[[Any, Sequence[Incoming]], None] | None = None,
        skip_unknown: bool = False,
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
        # every handler uses plain SQL only: batches run in a Tx, not an ORM session (a tenth of the
        # cost of a transaction; gridloop.rawsql)
        self.plain_sql = plain_sql
        # run first in every batch transaction, outside any savepoint, with the batch's parsed events
        # (the router takes the routing locks of the areas they fall in)
        self.on_begin = on_begin
        self.skip_unknown = skip_unknown

    def subscribe(
        self,
        broker: KafkaBroker,
        *,
        max_records: int = 500,
        fetch_max_wait_ms: int = 50,
        fetch_min_bytes: int = 1,
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
            fetch_min_bytes=fetch_min_bytes,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(session_timeout_ms // 5, 500),
            ack_policy=AckPolicy.MANUAL,
            # the records are parsed once, by parse_record: FastStream's own JSON decoding of every
            # message would be thrown away
            decoder=_undecoded,
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
        """Apply parsed events and dead-letter the rest, all in one transaction (runs in a thread).

        The batch is first applied straight through, with no savepoint per event: that is the cost
        of an event, not of its bookkeeping. Only when some handler fails is the whole transaction
        rolled back and the batch applied again event by event, each in its savepoint, to find the
        one that fails, count its attempts and in the end dead-letter it.
        """
        parsed: list[Incoming] = []
        dead: list[tuple[_Raw, str, int]] = []
        skipped: Counter[tuple[str, str]] = Counter()
        for raw in raws:
            try:
                parsed.append(parse_record(raw))
            except UnknownEventType as exc:
                if not self.skip_unknown:
                    dead.append((raw, f"unparseable: {exc}", 1))
                    continue
                skipped[(raw.topic, str(exc))] += 1
            except Exception as exc:
                dead.append((raw, f"unparseable: {exc}", 1))
        for (topic, event_type), n in skipped.items():
            # counted at once: a skipped record has no effect a rollback could undo
            log.info("%s: skipped %d %s of an unknown type %s", self.group, n, topic, event_type)
            metrics.events_skipped.labels(self.group, event_type).inc(n)
        try:
            outcome = self._apply(raws, parsed, list(dead), careful=False)
        except Exception as exc:
            log.info("%s: batch of %d needs a careful pass (%s)", self.group, len(raws), exc)
            outcome = self._apply(raws, parsed, dead, careful=True)
        for callback in outcome:
            callback()

    def _apply(
        self, raws: list[_Raw], parsed: list[Incoming], dead: list[tuple[_Raw, str, int]], careful: bool
    ) -> list[Callable[[], None]]:
        """One attempt at the batch in one transaction; returns what to run once it committed."""
        callbacks: list[Callable[[], None]] = []
        consumed: Counter[str] = Counter()
        duplicates: Counter[str] = Counter()
        with self.db.transaction(write=True) if self.plain_sql else self.db.session(write=True) as session:
            session.info["after_commit"] = callbacks
            if self.on_begin is not None:
                self.on_begin(session, parsed)
            raw_sql = Raw(session)
            seen = self._seen(raw_sql, [p.event.id for p in parsed])
            now = raw_sql.ts(utcnow())
            applied: dict[str, dict[str, Any]] = {}  # this batch's new ledger rows, by event id
            moved: dict[str, dict[str, Any]] = {}  # older ledger rows whose id came in a new record
            for item in parsed:
                place = Place(item.topic, item.partition, item.offset)
                if item.event.id in seen:
                    duplicates[item.topic] += 1
                    if is_redelivery(seen[item.event.id], place):
                        continue  # its result is on the topic already: replaying would double it
                    replay = self.replays.get(item.event.name)
                    if replay:
                        self._call(session, replay, item, careful)
                    seen[item.event.id] = place
                    row = applied.get(item.event.id)
                    if row is not None:
                        row.update(_source(place))
                    else:
                        moved[item.event.id] = {
                            "event_id": item.event.id,
                            "consumer": self.group,
                            **_source(place),
                        }
                    continue
                seen[item.event.id] = place
                handler = self.handlers.get(item.event.name)
                if handler is not None:
                    if careful:
                        try:
                            self._call(session, handler, item, careful)
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
                    else:
                        self._call(session, handler, item, careful)
                    consumed[item.topic] += 1
                applied[item.event.id] = {
                    "event_id": item.event.id,
                    "consumer": self.group,
                    **_source(place),
                    "processed_at": now,
                }
            # one executemany for the whole batch's ledger rows (and one for the rare moved ones)
            raw_sql.many(_LEDGER_INSERT, applied.values())
            raw_sql.many(_LEDGER_MOVE, moved.values())
            for raw, error, tries in dead:
                self._dead_letter(session, raw, error, tries)
        for event_id in {p.event.id for p in parsed}:
            self._failures.pop(event_id, None)
        group = self.group

        def count() -> None:
            # counted once committed: a batch applied a second time must not count twice
            for topic, n in consumed.items():
                metrics.events_consumed.labels(group, topic).inc(n)
            for topic, n in duplicates.items():
                metrics.events_duplicate.labels(group, topic).inc(n)
            for raw, _error, _tries in dead:
                metrics.deadletter_total.labels(raw.topic).inc()

        return [count, *callbacks]

    @staticmethod
    def _call(session: Session | Tx, handler: Handler, item: Incoming, careful: bool) -> None:
        # what the handler logs carries this event's ids, and only this event's
        with log_context(**event_ids(item.event.id, item.data)):
            if careful:
                with savepoint(session):
                    handler(session, item)
            else:
                handler(session, item)
            _settle(session)

    def _seen(self, raw_sql: Raw, ids: list[str]) -> dict[str, Place | None]:
        """The ids among these this consumer has applied before, with the record each was last handled
        from (None in rows recorded before the ledger kept it)."""
        if not ids:
            return {}
        params: dict[str, Any] = {"consumer": self.group}
        sql = _LEDGER_SEEN.replace("(:ids)", in_list("id", sorted(set(ids)), params))
        return {
            event_id: None if partition is None or offset is None else Place(topic, partition, offset)
            for event_id, topic, partition, offset in raw_sql.all(sql, params)
        }

    def _dead_letter(self, session: Session | Tx, raw: _Raw, error: str, attempts: int) -> None:
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
        with log_context(**envelope_ids(raw.value)):
            log.error(
                "%s: dead-lettered %s/%d/%d: %s", self.group, raw.topic, raw.partition, raw.offset, error
            )


__all__ = ["DEADLETTER_TOPIC", "Handler", "IdempotentConsumer", "Incoming", "TopicPartition", "after_commit"]
