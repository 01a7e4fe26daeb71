"""The official calendar years the closer uses: the shipped files and the imported ones (its database).

The shipped ``data/calendar/<year>.json`` files are the defaults; a year imported with `gridloop
calendar import` or `PUT /api/v1/admin/calendar/{year}` is a row of ``calendar_year`` and wins over
the file of that year. Every replica reads the table (`refresh`), so an import reaches them all
without a release. `install` is the one way a year is added: the row and the re-planned deadlines of
the open cases it affects, in the caller's transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlmodel import Session, col, select

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.db import Database
from schemas.calendar import CalendarError, CalendarYear, load_calendar_dir, parse_year
from services.closer import sla
from services.closer.calendar import Calendar, Official
from services.closer.lifecycle import Lifecycle
from services.closer.models import CalendarYearRow, Case

log = logging.getLogger(__name__)


def shipped(folder: Path) -> dict[int, Official]:
    """The shipped years (CalendarError naming the file if one is malformed)."""
    return {year: Official(f"{year}.json", doc) for year, doc in load_calendar_dir(folder).items()}


def imported(session: Session) -> dict[int, Official]:
    """The imported years; CalendarError naming the row if one no longer validates."""
    out: dict[int, Official] = {}
    for row in session.exec(select(CalendarYearRow).order_by(col(CalendarYearRow.year))):
        doc = parse_year(row.document, f"calendar_year row {row.year} ({row.origin})")
        out[row.year] = Official(row.origin, doc)
    return out


def official(shipped_years: dict[int, Official], db: Database) -> dict[int, Official]:
    """Shipped years overlaid with the imported ones."""
    with db.session() as session:
        return {**shipped_years, **imported(session)}


def refresh(
    calendar: Calendar,
    shipped_years: dict[int, Official],
    db: Database,
    tz: str,
    lifecycle: Lifecycle | None = None,
) -> None:
    """Reload the official years (an import on another replica) and set the confirmed-until gauge.

    With `lifecycle` (the scheduler's refresh), a changed year also re-plans the open cases it moves:
    a case this replica opened with the old year while another one imported the new one."""
    years = official(shipped_years, db)
    changed = sorted(y for y in {*years, *calendar.official} if years.get(y) != calendar.official.get(y))
    if changed:
        calendar.set_official(years)
        log.info("calendar: official years now %s", ", ".join(str(y) for y in sorted(years)))
        if lifecycle is not None:
            with db.session(write=True) as session:
                n = replan_open(session, lifecycle, lifecycle.calendars, changed[0], utcnow())
            log.info("calendar: %d open cases re-planned after the change of %s", n, changed)
    metrics.calendar_confirmed_until.set(calendar.confirmed_until_timestamp(tz))


def replan_open(
    session: Session, lifecycle: Lifecycle, work: sla.StreetCalendars, year: int, now: datetime
) -> int:
    """Re-plan the active cases whose deadlines a change of `year` (and later) can move; how many moved."""
    # only a deadline after the year began can count one of its days
    since = datetime.combine(date(year, 1, 1), datetime.min.time(), UTC) - timedelta(days=1)
    cases = session.exec(
        select(Case)
        .where(col(Case.is_active).is_(True), col(Case.resolve_due) >= since)
        .order_by(col(Case.case_id))
        .with_for_update()
    ).all()
    note = f"工作日历 {year} 年更新,期限重算 (official calendar {year} installed: deadlines re-planned)"
    return sum(lifecycle.replan(session, case, work, now, note) for case in cases)


@dataclass(frozen=True)
class Installed:
    """What an import did."""

    year: int
    days: int
    replanned: int
    calendar: Calendar


def install(
    session: Session,
    lifecycle: Lifecycle,
    shipped_years: dict[int, Official],
    doc: CalendarYear,
    origin: str,
    who: str,
    now: datetime,
) -> Installed:
    """Store an official year and re-plan the open cases whose deadlines it moves (one transaction).

    The caller commits, then puts `Installed.calendar`'s official years into use."""
    row = session.get(CalendarYearRow, doc.year, with_for_update=True)
    if row is None:
        row = CalendarYearRow(year=doc.year, document="", origin="", imported_by="", imported_at=now)
    row.document = doc.model_dump_json()
    row.origin, row.imported_by, row.imported_at = origin[:200], who[:60], now
    session.add(row)
    session.flush()
    # from the stored years, not this process's copy: another replica may have imported one meanwhile
    changed = Calendar({**shipped_years, **imported(session), doc.year: Official(origin[:200], doc)})
    work = lifecycle.calendars.on(changed)
    replanned = replan_open(session, lifecycle, work, doc.year, now)
    session.flush()
    return Installed(doc.year, len(doc.days), replanned, changed)


__all__ = [
    "CalendarError",
    "Installed",
    "imported",
    "install",
    "official",
    "refresh",
    "replan_open",
    "shipped",
]
