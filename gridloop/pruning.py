"""Pruning of the plumbing tables: sent outbox rows past their retention, ledger rows past the dedup window.

Runs on one replica per service database (`gridloop.leader`, role "prune"), in bounded batches (each
its own short transaction), on the indexes `ix_outbox_unsent` (sent_at first) and
`ix_processed_events_processed_at`. Unsent outbox rows are never touched: `sent_at < cutoff` is
false for NULL. Why the dedup window is long enough: `Settings.dedup_window_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.db import Database
from gridloop.leader import Leadership
from gridloop.rawsql import Raw, statement

log = logging.getLogger(__name__)

_OLD_OUTBOX = statement(
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at < :cutoff ORDER BY sent_at LIMIT :n)"
)
_OLD_LEDGER = statement(
    "DELETE FROM processed_events WHERE (event_id, consumer) IN "
    "(SELECT event_id, consumer FROM processed_events WHERE processed_at < :cutoff "
    "ORDER BY processed_at LIMIT :n)"
)


@dataclass(frozen=True)
class Cutoffs:
    """What is old enough to go: outbox rows sent before `outbox`, ledger rows recorded before `ledger`."""

    outbox: datetime
    ledger: datetime


def cutoffs(now: datetime, outbox_retain: timedelta, dedup_window: timedelta) -> Cutoffs:
    """The cutoffs of one pass."""
    return Cutoffs(outbox=now - outbox_retain, ledger=now - dedup_window)


def pause_after(deleted: dict[str, int], batch: int, interval: float) -> float:
    """After a pass: go on at once when a table had a full batch (more waits), else wait `interval`."""
    return 0.0 if any(n >= batch for n in deleted.values()) else interval


class Pruner:
    """Deletes old plumbing rows of one service database while it leads the role "prune"."""

    def __init__(
        self,
        db: Database,
        service: str,
        leadership: Leadership,
        outbox_retain: timedelta,
        dedup_window: timedelta,
        batch: int = 5000,
        interval: float = 60.0,
    ) -> None:
        self.db = db
        self.service = service
        self.leadership = leadership
        self.outbox_retain = outbox_retain
        self.dedup_window = dedup_window
        self.batch = batch
        self.interval = interval

    def prune_once(self) -> dict[str, int] | None:
        """One bounded pass (blocking): rows deleted per table, or None when another replica prunes."""
        if not self.leadership.check():
            return None
        cut = cutoffs(utcnow(), self.outbox_retain, self.dedup_window)
        deleted: dict[str, int] = {}
        for table, sql, cutoff in (
            ("outbox", _OLD_OUTBOX, cut.outbox),
            ("processed_events", _OLD_LEDGER, cut.ledger),
        ):
            with self.db.transaction(write=True) as tx:
                raw = Raw(tx)
                deleted[table] = raw.run(sql, {"cutoff": raw.ts(cutoff), "n": self.batch})
            if deleted[table]:
                metrics.pruned_rows.labels(self.service, table).inc(deleted[table])
        return deleted

    async def run(self) -> None:
        """The background task: a pass every `interval`, back to back while a table has a backlog."""
        while True:
            pause = self.interval
            try:
                deleted = await asyncio.to_thread(self.prune_once)
                if deleted:
                    if any(deleted.values()):
                        log.info("%s pruned %s", self.service, deleted)
                    pause = pause_after(deleted, self.batch, self.interval)
            except Exception:
                log.exception("%s: pruning failed", self.service)
            await asyncio.sleep(pause)
