"""The sender: due deliveries out through Apprise, under leadership so replicas never both send.

Each tick (only while this process leads `sender`) reads the due deliveries, groups them by channel,
and sends: more than `digest_threshold` for one channel go as one grouped message (a flood becomes a
digest), the rest one by one. Each send's outcome is settled in its own short transaction: sent, or
another attempt after an exponential backoff, or failed after `max_attempts`. Metrics count after
the commit.

Exactly once holds for redelivered and re-driven events (the ledger and the unique (event, channel)
row). A send is at least once across a crash: a process killed after Apprise delivered but before
the outcome committed leaves the row pending, and the next leader sends it again. Chat robots have no
idempotency key to prevent that; the window is one HTTP request long.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.db import Database
from gridloop.leader import Leadership
from services.notifier import channels, deliveries
from services.notifier.deliveries import Backoff, Due, Settled
from services.notifier.messages import render_digest

log = logging.getLogger(__name__)
BATCH = 500

Send = Callable[[str, str, str], tuple[bool, str]]
"""(url, title, body) → (ok, error): Apprise in production (channels.send)."""


@dataclass
class TickResult:
    """What one tick did: messages sent (a digest is one), deliveries settled by outcome."""

    messages: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0


def plan(rows: list[Due], threshold: int) -> list[list[Due]]:
    """The sends of one tick: per channel (in order of first due), one digest of all its rows when there
    are more than `threshold`, else one send per row; pure."""
    by_channel: dict[str, list[Due]] = {}
    for row in rows:
        by_channel.setdefault(row.channel, []).append(row)
    sends: list[list[Due]] = []
    for group in by_channel.values():
        if len(group) > threshold:
            sends.append(group)
        else:
            sends.extend([row] for row in group)
    return sends


class Sender:
    """Sends due deliveries (the loop: `run`, a Runtime background task)."""

    def __init__(
        self,
        db: Database,
        leadership: Leadership,
        policy: Backoff,
        digest_threshold: int,
        interval: float,
        english: bool = True,
        send: Send = channels.send,
    ) -> None:
        self.db = db
        self.leadership = leadership
        self.policy = policy
        self.threshold = digest_threshold
        self.interval = interval
        self.english = english
        self.send = send
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # one tick at a time in this process (the loop's, an operator's or a test's): two would both
        # read a pending row and both send it; other processes are kept out by the leadership
        self._ticking = threading.Lock()

    def wake(self) -> None:
        """New deliveries were committed: look sooner (they may still be held for a digest). Called
        from the consumer's thread, so the event is set on the loop's own thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def tick(self, now: datetime | None = None) -> TickResult:
        """One pass over what is due (blocking: run it in a thread)."""
        with self._ticking:
            return self._tick(now or utcnow())

    def _tick(self, now: datetime) -> TickResult:
        with self.db.session() as session:
            rows = deliveries.due(session, now, BATCH)
        result = TickResult()
        for group in plan(rows, self.threshold):
            if len(group) == 1:
                title, body, size = group[0].title, group[0].body, None
            else:
                message = render_digest([r.title for r in group], [r.link for r in group], self.english)
                title, body, size = message.title, message.body, len(group)
            ok, error = self.send(group[0].channel, title, body)
            if not ok:
                log.warning("notification to %s failed: %s", channels.masked(group[0].channel), error)
            with self.db.session(write=True) as session:
                settled = deliveries.settle(
                    session, [r.id for r in group], ok, error, utcnow(), self.policy, size
                )
            result.messages += 1
            self._count(settled, result)
        return result

    @staticmethod
    def _count(settled: list[Settled], result: TickResult) -> None:
        for s in settled:
            metrics.notifications.labels(s.channel_kind, s.outcome).inc()
            if s.outcome == "sent":
                result.sent += 1
                if s.latency is not None:
                    metrics.notification_latency.observe(s.latency)
            elif s.outcome == "retry":
                result.retried += 1
            else:
                result.failed += 1

    async def run(self) -> None:
        """The loop: tick while leading, then wait for the interval or a wake-up."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                if await asyncio.to_thread(self.leadership.check):
                    await asyncio.to_thread(self.tick)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sender tick failed; trying again next tick")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
