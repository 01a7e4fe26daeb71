"""The live queue: server-sent events from the timeline table (works across replicas).

Each timeline row is a change to a case; its id orders the stream. A stream reads the database only
when it starts (the newest id, and what came after Last-Event-ID); from then on the process's one
`TimelinePoller` hands it the rows of its station, woken by a commit in this process and polling
for the changes of other replicas.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gridloop.db import Database
from services.closer.poller import LOOKBACK, Change, TimelinePoller, changes_since, is_full, last_id

HEARTBEAT_SECONDS = 15.0


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One server-sent event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def unsent(changes: list[Change], sent: set[int]) -> list[Change]:
    """The changes a stream has not sent yet, marked as sent (the look-back repeats some)."""
    out = [c for c in changes if c.id not in sent]
    sent.update(c.id for c in out)
    return out


async def queue_events(
    db: Database,
    poller: TimelinePoller,
    stations: frozenset[str] | None,
    start_after: int | None,
    poll_seconds: float,
    disconnected: Callable[[], Any],
    still_valid: Callable[[], Awaitable[str | None]] | None = None,
) -> AsyncIterator[str]:
    """The stream: a hello, then one `change` event per timeline row, heartbeats in between.

    `still_valid` re-checks the caller's token (expiry, revocation) at most once a poll interval:
    None while it holds, else the error code, sent as a last `end` event before the stream closes.
    A client that stops reading is cut off after `poller.MAX_BACKLOG` changes (no `end`: the browser
    reconnects with Last-Event-ID and catches up from the database)."""

    def newest() -> int:
        with db.session() as s:
            return last_id(s)

    def fetch(after: int) -> list[Change]:
        with db.session() as s:
            return changes_since(s, stations, after)

    cursor = start_after if start_after is not None else await asyncio.to_thread(newest)
    rows = await asyncio.to_thread(fetch, cursor)
    # what existed when the stream began is history, not news
    sent = {r.id for r in rows if r.id <= cursor}
    one = next(iter(stations)) if stations is not None and len(stations) == 1 else None
    yield "retry: 2000\n\n" + sse("hello", {"station": one, "last_id": cursor}, cursor)
    sub = None
    try:
        # start-up: what came after Last-Event-ID, page by page; the poller takes over after the last
        while True:
            if not is_full(rows):
                sub = poller.subscribe(stations, max([cursor, *(r.id for r in rows)]))
            for change in unsent(rows, sent):
                cursor = max(cursor, change.id)
                yield sse("change", change.data(), change.id)
            if sub is not None:
                break
            rows = await asyncio.to_thread(fetch, cursor)
        idle = 0.0
        checked = time.monotonic()
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
            poller.ensure_running()
            changes = await sub.next(poll_seconds)
            if sub.overflowed:
                return
            if not changes:
                idle += poll_seconds
                if idle >= HEARTBEAT_SECONDS:
                    idle = 0.0
                    yield ": keep-alive\n\n"
            for change in unsent(changes, sent):
                cursor = max(cursor, change.id)
                idle = 0.0
                yield sse("change", change.data(), change.id)
            if len(sent) > 4 * LOOKBACK:
                sent = {i for i in sent if i > cursor - LOOKBACK}
    finally:
        if sub is not None:
            poller.unsubscribe(sub)
