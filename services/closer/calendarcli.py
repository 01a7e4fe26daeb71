"""`gridloop calendar show YEAR` and `gridloop calendar import FILE`: the working calendar from a shell.

`import` is `calendarstore.install`, the same path as `PUT /api/v1/admin/calendar/{year}`; running
closers use the imported year from their next refresh (one scheduler gauge interval).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gridloop.settings import get_settings

if TYPE_CHECKING:  # the database side is imported when a command runs: `gridloop --help` stays quick
    from gridloop.db import Database
    from services.closer.calendar import Calendar, Day

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _database() -> Database:
    from gridloop.db import Database
    from services.closer.models import Base

    return Database(get_settings().db_url("closer"), Base.metadata)


def _folder() -> Path:
    from services.closer.config import calendar_dir, get_config

    return calendar_dir(get_config(), get_settings().jurisdiction_dir)


def day_line(d: Day) -> str:
    """One named day: date, weekday, day off or working, its source (starred when estimated), names."""
    kind = "make-up working day" if d.working else "day off"
    source = f"{d.source} *" if d.estimated else d.source
    weekday = _WEEKDAYS[d.date.weekday()]
    return f"{d.date.isoformat()}  {weekday}  {kind:20}  {source:24}  {d.name_zh} {d.name_en}"


def show_lines(calendar: Calendar, year: int) -> list[str]:
    """What `gridloop calendar show` prints for a year."""
    if calendar.estimated(year):
        head = (
            f"{year}: ESTIMATED (no official schedule; confirmed until the end of"
            f" {calendar.confirmed_until()})."
            " * marks estimated days: festivals computed by the holidays package, make-up working days"
            " unknown until the State Council publishes them."
        )
    else:
        head = f"{year}: confirmed."
    lines = [head]
    lines += [day_line(d) for d in calendar.special_days(year)]
    lines.append("Other Saturdays and Sundays are days off; other weekdays are working days.")
    return lines


def load_calendar(folder: Path, db: Database | None) -> Calendar:
    """The calendar the closer would use: shipped years, overlaid with the imported ones."""
    from services.closer import calendarstore
    from services.closer.calendar import Calendar

    years = calendarstore.shipped(folder)
    return Calendar(years if db is None else calendarstore.official(years, db))


def operator_calendar() -> Calendar:
    """The calendar the closer would use, for a command: the shipped years, and the imported ones
    when the closer's database answers (raises CalendarError on a malformed year)."""
    from sqlalchemy.exc import SQLAlchemyError

    db = _database()
    try:
        url = db.engine.url
        if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
            # connecting would create an empty database file: there is none here, so no imported years
            print("note: no closer database here; shipped files only", file=sys.stderr)
            return load_calendar(_folder(), None)
        return load_calendar(_folder(), db)
    except SQLAlchemyError as exc:  # no closer database here: the shipped years alone
        print(f"note: imported years not read ({type(exc).__name__}); shipped files only", file=sys.stderr)
        return load_calendar(_folder(), None)
    finally:
        db.dispose()


def cmd_show(args: argparse.Namespace) -> int:
    """Print every day off and make-up working day of a year with its source."""
    from schemas.calendar import CalendarError

    try:
        calendar = operator_calendar()
    except CalendarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(show_lines(calendar, args.year)))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Validate a published year and install it; re-plan the open cases it affects."""
    from gridloop.clock import utcnow
    from schemas.calendar import CalendarError, parse_year
    from schemas.reference import load_jurisdiction
    from services.closer import calendarstore, sla
    from services.closer.calendar import Calendar
    from services.closer.config import get_config
    from services.closer.lifecycle import Lifecycle

    path = Path(args.file)
    try:
        doc = parse_year(path.read_bytes(), str(path))
    except OSError as exc:
        print(f"error: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except CalendarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings, config = get_settings(), get_config()
    db = _database()
    try:
        years = calendarstore.shipped(_folder())
        calendar = Calendar(calendarstore.official(years, db))
        j = load_jurisdiction(settings.jurisdiction_dir)
        work = sla.StreetCalendars(j, config.work_timezone).on(calendar)
        lifecycle = Lifecycle(j, work, config.confirm_window_hours)
        with db.session(write=True) as session:
            done = calendarstore.install(session, lifecycle, years, doc, path.name, "cli", utcnow())
    except CalendarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(
        f"{done.year}: {done.days} official days installed from {path.name};"
        f" {done.replanned} open cases re-planned;"
        f" confirmed until the end of {done.calendar.confirmed_until()}"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`gridloop calendar show|import`."""
    cal = sub.add_parser("calendar", help="the working calendar: days off and make-up working days")
    cal_sub = cal.add_subparsers(dest="calendar_command", required=True)
    show = cal_sub.add_parser("show", help="every day off and make-up working day of a year, with its source")
    show.add_argument("year", type=int)
    show.set_defaults(func=cmd_show)
    imp = cal_sub.add_parser(
        "import", help="validate and install a published year (data/calendar/<year>.json form)"
    )
    imp.add_argument("file")
    imp.set_defaults(func=cmd_import)
