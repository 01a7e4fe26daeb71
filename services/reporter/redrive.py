"""Publish again the reports that have no case yet: the broker may have lost them (same event ids);
one replica per reporter database does it (`gridloop.leader`, role "redrive").

Each re-drive is a new record, so the router replays its stored decision for it (a mere redelivery
of a record replays nothing: `gridloop.redelivery`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from gridloop.clock import as_utc, utcnow
from gridloop.outbox import add_event
from gridloop.service import Runtime
from gridloop.topics import REPORTS_SUBMITTED
from services.reporter.models import PLUMBING, Photo, Place, Report
from services.reporter.reports import submitted_event

log = logging.getLogger(__name__)


def redrive_unfinished(session: Session, older_than: timedelta, limit: int = 500) -> int:
    """Publish again the reports that have no case yet (the broker may have lost them); same event ids."""
    cutoff = utcnow() - older_than
    rows = session.exec(
        select(Report)
        .where(col(Report.case_id).is_(None), col(Report.last_published_at) < cutoff)
        .order_by(col(Report.submitted_at))
        .limit(limit)
    ).all()
    for report in rows:
        report.submitted_at = as_utc(report.submitted_at)
        place = session.get(Place, report.place_id) if report.place_id else None
        photo_ids = session.exec(
            select(Photo.photo_id).where(Photo.report_id == report.report_id).order_by(col(Photo.position))
        ).all()
        event = submitted_event(
            report, place.name_zh if place else None, report.submitted_at, list(photo_ids)
        )
        add_event(session, PLUMBING, REPORTS_SUBMITTED, report.grid_id or "none", event)
        report.last_published_at = utcnow()
        session.add(report)
    return len(rows)


def redrive_tick(runtime: Runtime, after_seconds: float, batch: int) -> int | None:
    """One re-drive pass (blocking) if this replica leads "redrive": reports published again, or None."""
    if not runtime.leadership("redrive").check():
        return None
    with runtime.db.session(write=True) as session:
        return redrive_unfinished(session, timedelta(seconds=after_seconds), batch)


def redrive_loop(
    runtime: Runtime, after_seconds: float, batch: int
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The background task: every quarter of `after_seconds`, re-drive what waited longer than that,
    on one replica per reporter database (the leader of "redrive"; the others only re-check)."""

    async def loop() -> None:
        every = max(after_seconds / 4, 1.0)
        while True:
            await asyncio.sleep(every)
            try:
                count = await asyncio.to_thread(redrive_tick, runtime, after_seconds, batch)
                if count:
                    log.info("re-driving %d reports without a case", count)
                    runtime.relay.wake()
            except Exception:
                log.exception("redrive failed")

    return loop
