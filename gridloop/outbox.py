"""Transactional outbox: rows written with the state change, relayed to Kafka, marked sent after the ack.

Guarantees (docs/architecture.md, "Nothing is lost"):
- a row is marked sent only after the broker acknowledged it (`acks=all`); rows leave in id order;
- one relay per service database sends (`gridloop.leader`, role "outbox"); leadership is checked
  before every batch, so a relay that lost it stops before its next send;
- exactly once across a leader change, within a bound: the old leader may have sent a prefix of the
  unsent rows and died before marking them. A new leader first waits `takeover_grace` (a batch the
  old one had in flight lands or fails), then reads the last `batch` records of every partition of
  the topics its first `batch` unsent rows go to, and marks the rows it finds there (header
  `gridloop-outbox`: service/row id/event id) sent without sending them. The old leader only ever
  had one batch of at most `batch` rows, the oldest unsent, in flight, so those are the only rows
  it can have sent unmarked. Not covered: a batch still in flight after the grace, or other
  producers writing more than `batch` records into a partition after it (the shared `deadletter`
  topic); either gives a duplicate that the consumers' ledger absorbs;
- the idempotent producer (`kafka_idempotence`, on Apache Kafka) keeps a retried send from being
  written twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.db import Database
from gridloop.kafkaauth import PLAINTEXT, KafkaSecurity
from gridloop.leader import Leadership
from gridloop.logs import envelope_ids, log_context
from gridloop.plumbing import PlumbingTables
from gridloop.rawsql import Bind, Raw, in_list, insert_row, statement
from schemas.envelope import CloudEvent

log = logging.getLogger(__name__)

OUTBOX_HEADER = "gridloop-outbox"
"""Kafka header of every relayed record: `<service>/<outbox row id>/<event id>` (reconciliation)."""


def add_event(session: Bind, tables: PlumbingTables, topic: str, key: str | None, event: CloudEvent) -> None:
    """Queue an event for publication in the caller's transaction."""
    add_raw(session, tables, topic, key, event.id, event.model_dump_json())


def add_raw(
    session: Bind, tables: PlumbingTables, topic: str, key: str | None, event_id: str, payload: str
) -> None:
    """Queue an already-serialised message (re-drive, dead letters) in the caller's transaction."""
    insert_row(
        Raw(session),
        tables.outbox.name,
        {
            "event_id": event_id,
            "topic": topic,
            "key": key,
            "payload": payload,
            "created_at": utcnow(),
            "attempts": 0,
        },
    )


def make_producer(
    bootstrap_servers: str, client_id: str, idempotence: bool = False, security: KafkaSecurity = PLAINTEXT
) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas; idempotent where the broker supports it
    (Apache Kafka; the embedded Tansu refuses it). aiokafka keeps one request in flight per broker,
    which is what idempotence needs; it asks nothing more than `acks=all`."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        **security.client_kwargs(),
        client_id=client_id,
        acks="all",
        enable_idempotence=idempotence,
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=15_000,
        retry_backoff_ms=200,
    )


class Unsent(NamedTuple):
    """An outbox row waiting for the broker."""

    id: int
    event_id: str
    topic: str
    key: str | None
    payload: str


_UNSENT = statement(
    "SELECT id, event_id, topic, key, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT :n"
)
_PENDING = statement("SELECT count(*) FROM outbox WHERE sent_at IS NULL")


def outbox_mark(service: str, row: Unsent) -> str:
    """The `gridloop-outbox` header value of a row: unique per row, and never equal for a row id
    reused after pruning (the event id differs)."""
    return f"{service}/{row.id}/{row.event_id}"


def already_sent(service: str, rows: Iterable[Unsent], marks: set[str]) -> list[int]:
    """The ids of the rows whose records are among the `marks` read from the broker."""
    return [row.id for row in rows if outbox_mark(service, row) in marks]


class SendsFailed(RuntimeError):
    """The broker did not take some rows of a batch; `row` is the first of them."""

    def __init__(self, message: str, row: Unsent) -> None:
        super().__init__(message)
        self.row = row


class OutboxRelay:
    """Moves outbox rows to Kafka in insertion order, batch by batch, while it leads its database."""

    def __init__(
        self,
        db: Database,
        tables: PlumbingTables,
        bootstrap_servers: str,
        service: str,
        batch: int = 500,
        poll_seconds: float = 0.2,
        topic_prefix: str = "",
        idempotence: bool = False,
        leadership: Leadership | None = None,
        follow_seconds: float = 2.0,
        takeover_grace: float = 1.0,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.topic_prefix = topic_prefix
        self.security = security
        self.db = db
        self.tables = tables
        self.bootstrap_servers = bootstrap_servers
        self.service = service
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.idempotence = idempotence
        self.leadership = leadership or Leadership(db, service, "outbox")
        self.follow_seconds = follow_seconds
        self.takeover_grace = takeover_grace
        self.reconciled_term = 0
        """The leadership term whose takeover was reconciled; sending waits until it is current."""
        self.reconciled_rows = 0
        """Rows found on the broker at takeovers and marked sent without sending (tests, logs)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._producer: AIOKafkaProducer | None = None
        self.connected = False
        self._producer_lock = asyncio.Lock()
        self._probe_at = -10.0
        self._probe_ok = False

    def wake(self) -> None:
        """Tell the relay that new rows were committed (saves a poll interval of latency)."""
        self._wake.set()

    async def start(self) -> None:
        """Start relaying in the background."""
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.service}")

    async def stop(self) -> None:
        """Stop relaying and give leadership up; unsent rows stay in the outbox for the next leader."""
        self._stopping = True
        if self._task:
            self._task.cancel()
            # bounded, and the loop checks _stopping: Python 3.11's wait_for can swallow a
            # cancellation that arrives as the awaited call finishes
            await asyncio.wait({self._task}, timeout=10.0)
        await self._close_producer()
        await asyncio.to_thread(self.leadership.release)

    async def _close_producer(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception:  # a producer of a dead broker may fail to close; it is dropped anyway
                log.debug("producer close failed", exc_info=True)
            self._producer = None
            self.connected = False

    async def _ensure_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            return await self._ensure_producer_locked()

    async def _ensure_producer_locked(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = make_producer(
                self.bootstrap_servers, f"gridloop-{self.service}-outbox", self.idempotence, self.security
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            self.connected = True
        return self._producer

    async def probe(self) -> bool:
        """True when the broker answers a metadata request (cached for a second)."""
        now = asyncio.get_running_loop().time()
        if now - self._probe_at < 1.0:
            return self._probe_ok
        self._probe_at = now
        try:
            producer = await asyncio.wait_for(self._ensure_producer(), timeout=3.0)
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=2.0)
            self._probe_ok = True
        except Exception:
            self._probe_ok = False
        return self._probe_ok

    async def _run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                sent = await self.drain_once()
                backoff = 0.2
                if not self.leadership.held:
                    await asyncio.sleep(self.follow_seconds)
                    continue
                if sent >= self.batch:
                    continue  # more is waiting: no pause
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                except TimeoutError:
                    pass
                self._wake.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # a failed send is about a row: the line carries its event, report and case ids
                row = exc.row if isinstance(exc, SendsFailed) else None
                with log_context(**(envelope_ids(row.payload) if row else {})):
                    log.warning("outbox relay (%s): %s; retrying in %.1fs", self.service, exc, backoff)
                await self._close_producer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _fetch_if_leading(self) -> list[Unsent] | None:
        """The next batch of unsent rows, or None when this relay does not lead (checked first)."""
        if not self.leadership.check():
            return None
        with self.db.transaction() as tx:
            raw = Raw(tx)
            rows = [Unsent(*row) for row in raw.all(_UNSENT, {"n": self.batch})]
            pending = len(rows)
            if pending >= self.batch:  # only a full batch needs the count of what else waits
                pending = int(raw.scalar(_PENDING) or 0)
        metrics.outbox_pending.labels(self.service).set(pending)
        return rows

    def _mark_sent(self, ids: list[int]) -> None:
        with self.db.transaction(write=True) as tx:
            raw = Raw(tx)
            params: dict[str, Any] = {"at": raw.ts(utcnow())}
            raw.run(f"UPDATE outbox SET sent_at = :at WHERE id IN {in_list('id', ids, params)}", params)

    async def drain_once(self) -> int:
        """Publish one batch of unsent rows if this relay leads; returns how many the broker acknowledged."""
        rows = await asyncio.to_thread(self._fetch_if_leading)
        if rows is None:
            return 0
        if self.leadership.term != self.reconciled_term:
            await self._take_over()
            return 0  # the next call fetches what is still unsent
        if not rows:
            return 0
        producer = await self._ensure_producer()
        prefix = self.topic_prefix
        futures = [
            await producer.send(
                prefix + row.topic,
                value=row.payload.encode(),
                key=row.key.encode() if row.key is not None else None,
                headers=[(OUTBOX_HEADER, outbox_mark(self.service, row).encode())],
            )
            for row in rows
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        acked = [row for row, res in zip(rows, results, strict=True) if not isinstance(res, BaseException)]
        if acked:
            await asyncio.to_thread(self._mark_sent, [row.id for row in acked])
            for topic, n in Counter(row.topic for row in acked).items():
                metrics.outbox_published.labels(self.service, topic).inc(n)
            metrics.outbox_pending.labels(self.service).dec(len(acked))
        failed = [(r, res) for r, res in zip(rows, results, strict=True) if isinstance(res, BaseException)]
        if failed:
            row, first = failed[0]
            raise SendsFailed(f"{len(failed)} of {len(rows)} sends failed: {first!r}", row)
        return len(acked)

    async def _take_over(self) -> None:
        """A new term: mark sent what the previous leader sent but did not mark, before any send."""
        term = self.leadership.term
        await asyncio.sleep(self.takeover_grace)  # the old leader's batch in flight lands or fails
        rows = await asyncio.to_thread(self._fetch_if_leading)
        if rows is None:
            return  # lost again during the grace: the next term reconciles
        if rows:
            marks = await self._marks_on_broker({row.topic for row in rows})
            found = already_sent(self.service, rows, marks)
            if found:
                await asyncio.to_thread(self._mark_sent, found)
                self.reconciled_rows += len(found)
                log.warning(
                    "%s relay took over: %d rows were on the broker unmarked; marked sent, not resent",
                    self.service,
                    len(found),
                )
        self.reconciled_term = term

    async def _marks_on_broker(self, topics: set[str], wait: float = 20.0) -> set[str]:
        """The `gridloop-outbox` headers of the last `batch` records of every partition of `topics`."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"gridloop-{self.service}-outbox-reconcile",
            group_id=None,
            enable_auto_commit=False,
            **self.security.client_kwargs(),
        )
        producer = await self._ensure_producer()  # its metadata names each topic's partitions
        tps = [
            TopicPartition(self.topic_prefix + topic, partition)
            for topic in sorted(topics)
            for partition in sorted(await producer.partitions_for(self.topic_prefix + topic))
        ]
        await consumer.start()
        try:
            if not tps:
                return set()
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            begins = await consumer.beginning_offsets(tps)
            todo: dict[TopicPartition, int] = {}
            for tp in tps:
                first = max(begins[tp], ends[tp] - self.batch)
                if first < ends[tp]:
                    consumer.seek(tp, first)
                    todo[tp] = ends[tp]
            marks: set[str] = set()
            deadline = time.monotonic() + wait
            while todo:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading the tail of {sorted(map(str, todo))} took over {wait}s")
                for records in (await consumer.getmany(*todo, timeout_ms=500)).values():
                    for record in records:
                        for name, value in record.headers:
                            if name == OUTBOX_HEADER:
                                marks.add(value.decode(errors="replace"))
                for tp in list(todo):
                    if await consumer.position(tp) >= todo[tp]:
                        del todo[tp]
            return marks
        finally:
            await consumer.stop()
