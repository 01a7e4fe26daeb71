"""One timeline poller per process: it reads new timeline rows and fans them out to the open streams.

The timeline table is read once per poll interval (or when a commit in this process wakes the
poller), however many queue streams are open; each stream takes the rows of its station from
memory. Changes made by other replicas arrive through the same poll. With no stream open the
poller stops and reads nothing (docs/architecture.md, "The live queue").

Subscribers may sit on other event loops than the poller (tests run each request on a loop of its
own): the poller's state is guarded by a thread lock and rows reach a stream through its own loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from gridloop.db import Database
from gridloop.logs import detached
from services.closer.models import TimelineEntry
from services.closer.queue import in_scope

# ids can commit out of order on PostgreSQL; look back this many ids and skip the ones already sent
LOOKBACK = 200
PAGE = 200
"""New rows read per query (after the look-back); a full page is followed by the next at once."""
MAX_BACKLOG = 2000
"""Changes a stream may leave unread; past that it is closed and the browser resumes with Last-Event-ID."""


@dataclass(frozen=True)
class Change:
    """One timeline row as the live queue shows it (shared by every stream, never changed)."""

    id: int
    case_id: str
    action: str
    status: str
    station_id: str | None
    prev_station_id: str | None
    version: int | None

    def concerns(self, stations: frozenset[str] | None) -> bool:
        """Whether a stream of these stations (None: every station) shows it."""
        return stations is None or self.station_id in stations or self.prev_station_id in stations

    def data(self) -> dict[str, Any]:
        """The `change` event's data."""
        return {
            "case_id": self.case_id,
            "action": self.action,
            "status": self.status,
            "station_id": self.station_id,
            "prev_station_id": self.prev_station_id,
            "version": self.version,
        }


def last_id(session: Session) -> int:
    """The newest timeline id."""
    return int(session.exec(select(func.max(TimelineEntry.id))).one() or 0)


def changes_since(
    session: Session, stations: frozenset[str] | None, after: int, limit: int = PAGE
) -> list[Change]:
    """Timeline rows after an id (minus the look-back), for some stations or all, oldest first."""
    q = select(TimelineEntry).where(col(TimelineEntry.id) > max(after - LOOKBACK, 0))
    if stations is not None:
        q = q.where(
            or_(
                in_scope(col(TimelineEntry.station_id), stations),
                in_scope(col(TimelineEntry.prev_station_id), stations),
            )
        )
    rows = session.exec(q.order_by(col(TimelineEntry.id)).limit(limit + LOOKBACK))
    return [
        Change(int(r.id or 0), r.case_id, r.action, r.status, r.station_id, r.prev_station_id, r.version)
        for r in rows
    ]


def is_full(rows: list[Change], limit: int = PAGE) -> bool:
    """Whether a read of `changes_since` may have left rows behind (read again at once)."""
    return len(rows) >= limit + LOOKBACK


class Subscription:
    """One open stream's inbox: the changes of its station, pushed by the poller from any thread."""

    def __init__(self, stations: frozenset[str] | None) -> None:
        self.stations = stations
        self.overflowed = False
        self._loop = asyncio.get_running_loop()
        self._inbox: list[Change] = []
        self._arrived = asyncio.Event()

    def push(self, changes: list[Change]) -> None:
        """Hand over changes (the ones of this station) on the stream's own loop."""
        mine = [c for c in changes if c.concerns(self.stations)]
        if not mine:
            return
        try:
            self._loop.call_soon_threadsafe(self._receive, mine)
        except RuntimeError:
            pass  # the stream's loop is gone: so is the stream

    def _receive(self, changes: list[Change]) -> None:
        self._inbox.extend(changes)
        if len(self._inbox) > MAX_BACKLOG:
            self.overflowed = True  # the client stopped reading; it resumes from the database
            self._inbox.clear()
        self._arrived.set()

    async def next(self, wait_seconds: float) -> list[Change]:
        """The changes that arrived, waiting up to `wait_seconds` for the first."""
        if not self._inbox:
            try:
                await asyncio.wait_for(self._arrived.wait(), wait_seconds)
            except TimeoutError:
                pass
        self._arrived.clear()
        changes, self._inbox = self._inbox, []
        return changes


class TimelinePoller:
    """The process's one reader of new timeline rows for the live streams (thread-safe)."""

    def __init__(self, db: Database, poll_seconds: float) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._cursor = 0
        self._seen: set[int] = set()
        self._recent: deque[Change] = deque(maxlen=LOOKBACK)

    def subscribe(self, stations: frozenset[str] | None, after: int) -> Subscription:
        """A new stream that has read the timeline up to `after` itself; the poller starts if idle.

        Rows the poller handed out since the stream's own read are replayed to it (the stream skips
        the ones it has)."""
        sub = Subscription(stations)
        with self._lock:
            if not self._subscriptions:
                # idle until now: start from what this stream has read
                self._cursor, self._seen = after, set()
                self._recent.clear()
                replay: list[Change] = []
            else:
                replay = [c for c in self._recent if c.id > after - LOOKBACK]
            self._subscriptions.add(sub)
            sub.push(replay)
        self.ensure_running()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """A stream closed; after the last one the poller stops at once."""
        with self._lock:
            self._subscriptions.discard(sub)
            last = not self._subscriptions
        if last:
            self.notify()

    @property
    def streams(self) -> int:
        """The streams open in this process."""
        with self._lock:
            return len(self._subscriptions)

    @property
    def running(self) -> bool:
        """Whether the poller is reading (some stream is open)."""
        with self._lock:
            return self._task is not None and not self._task.done()

    def ensure_running(self) -> None:
        """Start the poller on this loop unless it runs (cheap: a stream calls it every interval)."""
        with self._lock:
            task = self._task
            if task is not None and not task.done() and not task.get_loop().is_closed():
                return
            if not self._subscriptions:
                return
            self._wake = asyncio.Event()
            # started by whichever stream came first: not in that request's log context
            self._task = asyncio.get_running_loop().create_task(
                self._run(self._wake), name="closer-poller", context=detached()
            )

    def notify(self) -> None:
        """A change was committed in this process: poll now (from any thread)."""
        with self._lock:
            task, wake = self._task, self._wake
        if task is None or wake is None or task.done():
            return
        try:
            task.get_loop().call_soon_threadsafe(wake.set)
        except RuntimeError:
            pass  # the poller's loop closed; the next stream tick starts a new one

    async def _run(self, wake: asyncio.Event) -> None:
        try:
            while True:
                with self._lock:
                    if not self._subscriptions:
                        return  # idle: no stream open, nothing read
                if await asyncio.to_thread(self.poll_once):
                    continue  # more rows waiting
                try:
                    await asyncio.wait_for(wake.wait(), self.poll_seconds)
                except TimeoutError:
                    pass
                wake.clear()
        finally:
            with self._lock:
                if self._task is asyncio.current_task():
                    self._task = self._wake = None

    def poll_once(self) -> bool:
        """Read the rows after the cursor (with the look-back), hand the new ones to every stream;
        True when the read was full and more may wait."""
        with self._lock:
            cursor = self._cursor
        with self.db.session() as session:
            rows = changes_since(session, None, cursor)
        with self._lock:
            fresh = [r for r in rows if r.id not in self._seen]
            for change in fresh:
                self._seen.add(change.id)
                self._recent.append(change)
                self._cursor = max(self._cursor, change.id)
            if len(self._seen) > 4 * LOOKBACK:
                self._seen = {i for i in self._seen if i > self._cursor - LOOKBACK}
            if fresh:
                for sub in self._subscriptions:
                    sub.push(fresh)
        return is_full(rows)
