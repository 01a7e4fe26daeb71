"""The escalation scheduler: database queries on each tick, no in-memory timers, so restarts lose nothing.

Each tick (1) escalates cases whose `escalate_at` has passed: once per deadline and due time, which
a unique row in `escalation` guarantees even with several replicas; (2) closes resolved cases the
rider did not answer within the confirm window; (3) now and then counts open cases for the gauge
and re-reads the imported calendar years (an import on another replica).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.db import Database, is_sqlite
from schemas.cases import CaseStatus
from services.closer import queue
from services.closer.lifecycle import Lifecycle
from services.closer.models import Case

log = logging.getLogger(__name__)
BATCH = 200


@dataclass
class TickResult:
    """What one tick did."""

    escalated: int = 0
    closed: int = 0


class Scheduler:
    """Escalations, automatic closing and the open-cases gauge, driven by the injectable clock."""

    def __init__(
        self,
        db: Database,
        lifecycle: Lifecycle,
        interval_seconds: float = 5.0,
        gauge_interval_seconds: float = 15.0,
        on_change: Callable[[], None] | None = None,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.lifecycle = lifecycle
        self.interval = interval_seconds
        self.gauge_interval = gauge_interval_seconds
        self.on_change = on_change
        # re-reads what another replica may have changed (the imported calendar years)
        self.refresh = refresh
        self._gauge_at = 0.0
        self._gauge_labels: set[tuple[str, str]] = set()

    def _lock(self, q: object) -> object:
        # replicas on PostgreSQL skip rows another replica is working on; SQLite has one writer anyway
        if is_sqlite(self.db.engine):
            return q
        return q.with_for_update(skip_locked=True)  # type: ignore[attr-defined]

    def tick(self, now: datetime | None = None) -> TickResult:
        """One pass: escalate what is due, auto-close what waited too long (one transaction)."""
        now = now or utcnow()
        result = TickResult()
        # the lifecycle's metrics run once the session has committed (rawsql.after_commit)
        with self.db.session(write=True) as session:
            for case in self._due(session, now):
                result.escalated += len(self.lifecycle.escalate_due(session, case, now))
            for case in self._to_close(session, now):
                self.lifecycle.auto_close(session, case, now)
                result.closed += 1
        if (result.escalated or result.closed) and self.on_change:
            self.on_change()
        return result

    def _due(self, session: Session, now: datetime) -> list[Case]:
        q = (
            select(Case)
            .where(col(Case.escalate_at).is_not(None), col(Case.escalate_at) <= now)
            .order_by(col(Case.escalate_at))
            .limit(BATCH)
        )
        return list(session.exec(self._lock(q)))  # type: ignore[call-overload]

    def _to_close(self, session: Session, now: datetime) -> list[Case]:
        q = (
            select(Case)
            .where(Case.status == CaseStatus.RESOLVED, col(Case.confirm_due) <= now)
            .order_by(col(Case.confirm_due))
            .limit(BATCH)
        )
        return list(session.exec(self._lock(q)))  # type: ignore[call-overload]

    def count_open(self) -> None:
        """Set gridloop_cases_open{station,status} from one GROUP BY (an index-only scan)."""
        with self.db.session() as session:
            counts = queue.open_by_station(session)
            red = queue.red_by_station(session, utcnow())
        for station in {st for st, _ in self._gauge_labels} | set(red):
            metrics.cases_red.labels(station).set(red.get(station, 0))
        for station, status in self._gauge_labels - set(counts):
            metrics.cases_open.labels(station, status).set(0)
        for (station, status), n in counts.items():
            metrics.cases_open.labels(station, status).set(n)
        self._gauge_labels |= set(counts)

    async def run(self) -> None:
        """The background loop (a Runtime background task)."""
        while True:
            try:
                await asyncio.to_thread(self.tick)
                if time.monotonic() - self._gauge_at >= self.gauge_interval:
                    self._gauge_at = time.monotonic()
                    await asyncio.to_thread(self.count_open)
                    if self.refresh:
                        await asyncio.to_thread(self.refresh)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler tick failed; trying again next tick")
            await asyncio.sleep(self.interval)
