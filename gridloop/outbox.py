"""Transactional outbox: rows written with the state change, relayed to Kafka, marked sent after the ack."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.db import Database, is_sqlite
from gridloop.plumbing import PlumbingTables
from gridloop.rawsql import Bind, Raw, in_list, insert_row, statement
from schemas.envelope import CloudEvent

log = logging.getLogger(__name__)


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


def make_producer(bootstrap_servers: str, client_id: str) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas; no idempotence (the embedded broker refuses it)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=15_000,
        retry_backoff_ms=200,
    )


_UNSENT = statement("SELECT id, topic, key, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT :n")
_PENDING = statement("SELECT count(*) FROM outbox WHERE sent_at IS NULL")


class OutboxRelay:
    """Moves outbox rows to Kafka in insertion order, batch by batch; drains again after an outage."""

    def __init__(
        self,
        db: Database,
        tables: PlumbingTables,
        bootstrap_servers: str,
        service: str,
        batch: int = 500,
        poll_seconds: float = 0.2,
        topic_prefix: str = "",
    ) -> None:
        self.topic_prefix = topic_prefix
        self.db = db
        self.tables = tables
        self.bootstrap_servers = bootstrap_servers
        self.service = service
        self.batch = batch
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._lock_conn: Any = None
        self.connected = False
        self._producer_lock = asyncio.Lock()
        self._probe_at = -10.0
        self._probe_ok = False

    def wake(self) -> None:
        """Tell the relay that new rows were committed (saves a poll interval of latency)."""
        self._wake.set()

    async def start(self) -> None:
        """Start relaying in the background."""
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.service}")

    async def stop(self) -> None:
        """Stop relaying; unsent rows stay in the outbox for the next start."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._close_producer()
        if self._lock_conn is not None:
            await asyncio.to_thread(self._lock_conn.close)
            self._lock_conn = None

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
            producer = make_producer(self.bootstrap_servers, f"gridloop-{self.service}-outbox")
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

    def _is_leader(self) -> bool:
        """On PostgreSQL only one replica relays (an advisory lock), so rows leave in order."""
        if is_sqlite(self.db.engine):
            return True
        if self._lock_conn is None:
            self._lock_conn = self.db.engine.connect()
        key = abs(hash(("gridloop-outbox", self.service))) % (2**31)
        got = self._lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        self._lock_conn.commit()
        return bool(got)

    async def _run(self) -> None:
        backoff = 0.2
        leader = False
        while True:
            try:
                if not leader:
                    leader = await asyncio.to_thread(self._is_leader)
                    if not leader:
                        await asyncio.sleep(2.0)
                        continue
                sent = await self.drain_once()
                backoff = 0.2
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
                log.warning("outbox relay (%s): %s; retrying in %.1fs", self.service, exc, backoff)
                await self._close_producer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _fetch(self) -> list[tuple[Any, ...]]:
        with self.db.transaction() as tx:
            raw = Raw(tx)
            rows = raw.all(_UNSENT, {"n": self.batch})
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
        """Publish one batch of unsent rows; returns how many the broker acknowledged."""
        rows = await asyncio.to_thread(self._fetch)
        if not rows:
            return 0
        producer = await self._ensure_producer()
        prefix = self.topic_prefix
        futures = [
            await producer.send(
                prefix + topic, value=payload.encode(), key=key.encode() if key is not None else None
            )
            for _id, topic, key, payload in rows
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        ok = [row[0] for row, res in zip(rows, results, strict=True) if not isinstance(res, BaseException)]
        if ok:
            await asyncio.to_thread(self._mark_sent, ok)
            published = Counter(
                row[1] for row, res in zip(rows, results, strict=True) if not isinstance(res, BaseException)
            )
            for topic, n in published.items():
                metrics.outbox_published.labels(self.service, topic).inc(n)
            metrics.outbox_pending.labels(self.service).dec(len(ok))
        failed = [res for res in results if isinstance(res, BaseException)]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(rows)} sends failed: {failed[0]!r}")
        return len(ok)
