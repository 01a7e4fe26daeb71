"""The live queue: server-sent events from the timeline table (works across replicas).

Each timeline row is a change to a case; its id orders the stream. A commit in this process wakes
the streams at once; a poll of the database catches changes made by other replicas.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from gridloop.db import Database
from services.closer.models import TimelineEntry

# ids can commit out of order on PostgreSQL; look back this many ids and skip the ones already sent
LOOKBACK = 200
HEARTBEAT_SECONDS = 15.0


class ChangeFeed:
    """Wakes every open stream of this process when a change was committed (thread-safe)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Event] = set()
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the event loop the streams run on."""
        self._loop = loop

    def notify(self) -> None:
        """A change was committed: wake the streams (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            waiters = list(self._waiters)
        for ev in waiters:
            loop.call_soon_threadsafe(ev.set)

    def waiter(self) -> asyncio.Event:
        """A new event that is set on every change."""
        ev = asyncio.Event()
        with self._lock:
            self._waiters.add(ev)
        return ev

    def drop(self, ev: asyncio.Event) -> None:
        """Forget a stream's event."""
        with self._lock:
            self._waiters.discard(ev)


def last_id(session: Session) -> int:
    """The newest timeline id."""
    return int(session.exec(select(func.max(TimelineEntry.id))).one() or 0)


def changes_since(session: Session, station: str | None, after: int, limit: int = 200) -> list[TimelineEntry]:
    """Timeline rows after an id (minus the look-back), for one station or all."""
    q = select(TimelineEntry).where(col(TimelineEntry.id) > max(after - LOOKBACK, 0))
    if station is not None:
        q = q.where(
            or_(col(TimelineEntry.station_id) == station, col(TimelineEntry.prev_station_id) == station)
        )
    return list(session.exec(q.order_by(col(TimelineEntry.id)).limit(limit + LOOKBACK)))


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One server-sent event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def queue_events(
    db: Database,
    feed: ChangeFeed,
    station: str | None,
    start_after: int | None,
    poll_seconds: float,
    disconnected: Callable[[], Any],
    still_valid: Callable[[], Awaitable[str | None]] | None = None,
) -> AsyncIterator[str]:
    """The stream: a hello, then one `change` event per timeline row, heartbeats in between.

    `still_valid` re-checks the caller's token (expiry, revocation) at most once a poll interval:
    None while it holds, else the error code, sent as a last `end` event before the stream closes."""

    def newest() -> int:
        with db.session() as s:
            return last_id(s)

    def fetch(after: int) -> list[TimelineEntry]:
        with db.session() as s:
            return changes_since(s, station, after)

    cursor = start_after if start_after is not None else await asyncio.to_thread(newest)
    # what existed when the stream began is history, not news
    sent = {int(r.id or 0) for r in await asyncio.to_thread(fetch, cursor) if int(r.id or 0) <= cursor}
    yield "retry: 2000\n\n" + sse("hello", {"station": station, "last_id": cursor}, cursor)
    wake = feed.waiter()
    idle = 0.0
    checked = time.monotonic()
    try:
        while True:
            if await disconnected():
                return
            if still_valid is not None and time.monotonic() - checked >= poll_seconds:
                checked = time.monotonic()
                problem = await still_valid()
                if problem is not None:
                    # a disabled account, a logout or an expired token ends the stream, not only new ones
                    yield sse("end", {"reason": problem})
                    return
            rows = await asyncio.to_thread(fetch, cursor)
            for row in rows:
                rid = int(row.id or 0)
                if rid in sent:
                    continue
                sent.add(rid)
                cursor = max(cursor, rid)
                idle = 0.0
                yield sse(
                    "change",
                    {
                        "case_id": row.case_id,
                        "action": row.action,
                        "status": row.status,
                        "station_id": row.station_id,
                        "prev_station_id": row.prev_station_id,
                        "version": row.version,
                    },
                    rid,
                )
            if len(sent) > 4 * LOOKBACK:
                sent = {i for i in sent if i > cursor - LOOKBACK}
            try:
                await asyncio.wait_for(wake.wait(), timeout=poll_seconds)
            except TimeoutError:
                idle += poll_seconds
                if idle >= HEARTBEAT_SECONDS:
                    idle = 0.0
                    yield ": keep-alive\n\n"
            wake.clear()
    finally:
        feed.drop(wake)
