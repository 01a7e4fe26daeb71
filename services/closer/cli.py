"""The closer's commands (`gridloop staff add|list|disable`, `gridloop closer import-photos`,
`gridloop sla due`, and `gridloop calendar` from calendarcli.py) and its demo accounts.

`gridloop/cli.py` mounts `add_parser`; `gridloop demo load` and `gridloop up` call `load_demo`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from gridloop.demo import DEMO_PASSWORD
from gridloop.settings import Settings, get_settings
from schemas.cases import PRIORITIES, ROLES

if TYPE_CHECKING:  # the database side is imported when a command runs: `gridloop --help` stays quick
    from gridloop.db import Database
    from schemas.reference import Jurisdiction
    from services.closer.sla import WhatIf

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class DemoAccount:
    """A demo login printed by `gridloop up`."""

    username: str
    role: str
    stations: list[str]
    streets: list[str] = field(default_factory=list)


def demo_accounts(j: Jurisdiction) -> list[DemoAccount]:
    """One account per station (staff), one per centre (the supervisor of its street), an admin of
    every street, and a `city` account that supervises them all."""
    accounts: list[DemoAccount] = []
    for station in j.stations.values():
        role = "supervisor" if station.kind == "centre" else "staff"
        accounts.append(DemoAccount(station.id, role, [station.id]))
    accounts.append(DemoAccount("admin", "admin", [], list(j.streets)))
    # street scoping (issue 17): the city level sees every street
    accounts.append(DemoAccount("city", "city", []))
    return accounts


def load_demo_staff(db: Database, j: Jurisdiction) -> list[DemoAccount]:
    """Create the demo accounts in the closer's database (existing ones are left alone)."""
    from sqlmodel import select

    from services.closer.models import Staff
    from services.closer.staff import add_staff

    accounts = demo_accounts(j)
    with db.session(write=True) as session:
        for acc in accounts:
            if session.exec(select(Staff).where(Staff.username == acc.username)).first() is None:
                add_staff(session, acc.username, DEMO_PASSWORD, acc.role, acc.stations, streets=acc.streets)  # type: ignore[arg-type]
    return accounts


def load_demo(settings: Settings, j: Jurisdiction) -> list[DemoAccount]:
    """The closer's demo data: a staff account per station, a supervisor per centre, an admin, city."""
    from gridloop.db import Database
    from services.closer.models import Base

    db = Database(settings.db_url("closer"), Base.metadata)
    try:
        return load_demo_staff(db, j)
    finally:
        db.dispose()


def _database() -> Database:
    from gridloop.db import Database
    from services.closer.models import Base

    return Database(get_settings().db_url("closer"), Base.metadata)


def cmd_staff_add(args: argparse.Namespace) -> int:
    """Create or update a staff account (an existing one's tokens are revoked: a password reset)."""
    from schemas.reference import load_jurisdiction
    from services.closer.staff import add_staff, check_places

    j = load_jurisdiction(get_settings().jurisdiction_dir)
    stations, streets = args.station or [], getattr(args, "street", None) or []
    try:
        check_places(j, args.role, stations, streets)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    password = args.password or os.environ.get("GRIDLOOP_STAFF_PASSWORD") or getpass.getpass("Password: ")
    db = _database()
    try:
        with db.session(write=True) as session:
            add_staff(session, args.username, password, args.role, stations, args.name or "", streets)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    where = _where(args.role, stations, streets, j)
    print(f"{args.username}: {args.role} {','.join(stations) or '(no station)'} · {where}")
    return 0


def _where(role: str, stations: list[str], streets: list[str], j: Jurisdiction) -> str:
    """The streets an account sees, as `staff add` and `staff list` print them."""
    from gridloop.scope import account_streets

    if role == "city":
        return "every street"
    held, defaulted = account_streets(role, stations, streets, j)
    return ",".join(held) + (" (the default street)" if defaulted else "")


def cmd_staff_list(_args: argparse.Namespace) -> int:
    """List the staff accounts, each with the streets it sees."""
    from sqlmodel import col, select

    from schemas.reference import load_jurisdiction
    from services.closer.models import Staff

    j = load_jurisdiction(get_settings().jurisdiction_dir)
    db = _database()
    try:
        with db.session() as session:
            for s in session.exec(select(Staff).order_by(col(Staff.username))):
                state = "active" if s.active else "disabled"
                where = _where(s.role, s.station_ids, s.street_ids, j)
                print(f"{s.username:20} {s.role:10} {','.join(s.station_ids) or '-':20} {where:20} {state}")
    finally:
        db.dispose()
    return 0


def cmd_staff_disable(args: argparse.Namespace) -> int:
    """Disable an account (its tokens stop working at once: `staff.tokens_revoked` goes out)."""
    from sqlmodel import select

    from services.closer.models import Staff
    from services.closer.staff import disable_staff

    db = _database()
    try:
        with db.session(write=True) as session:
            staff = session.exec(
                select(Staff).where(Staff.username == args.username).with_for_update()
            ).first()
            if staff is None:
                print(f"error: no account {args.username}", file=sys.stderr)
                return 2
            disable_staff(session, staff)
    finally:
        db.dispose()
    print(f"{args.username}: disabled")
    return 0


def cmd_import_photos(args: argparse.Namespace) -> int:
    """Copy after-photos kept as files before issue 13 into the database (safe to run again)."""
    from pathlib import Path

    from services.closer.photostore import import_files

    folder = Path(args.dir) if args.dir else get_settings().var_dir / "closer-photos"
    if not folder.is_dir():
        print(f"error: no folder {folder}", file=sys.stderr)
        return 2
    db = _database()
    try:
        with db.session(write=True) as session:
            result = import_files(session, folder)
    finally:
        db.dispose()
    print(f"{folder}: {result.imported} imported, {result.present} already in the database")
    for name in result.unknown:
        print(f"skipped {name}: no after-photo of that id in the database", file=sys.stderr)
    return 0


def render_what_if(
    w: WhatIf, category: str, priority: str, street: str, hours: str, tz: ZoneInfo
) -> list[str]:
    """The lines `gridloop sla due` prints: budget, clock, both deadlines and each day they cross."""

    def local(at: datetime) -> str:
        t = at.astimezone(tz)
        return f"{t:%Y-%m-%d %H:%M} ({_WEEKDAYS[t.weekday()]})"

    clock = "calendar (24 小时处置: around the clock)" if w.budget.clock == "calendar" else "working"
    lines = [
        f"category   {category} · priority {priority} · street {street} ({hours}, {tz.key})",
        f"clock      {clock}",
        f"sign-for   {w.budget.ack_hours:g} h → {local(w.plan.ack_due)}",
        f"resolve    {w.budget.resolve_hours:g} h → {local(w.plan.resolve_due)}",
        "days" + (" (calendar time: every hour of every day counts)" if w.budget.clock == "calendar" else ""),
    ]
    for d in w.days:
        kind = "working day" if d.workday else "day off"
        lines.append(f"  {d.day.isoformat()} {_WEEKDAYS[d.day.weekday()]}  {kind:11}  {d.source}")
    return lines


def cmd_sla_due(args: argparse.Namespace) -> int:
    """What-if: the deadlines a report would get, its clock, and which calendar source decided each day."""
    from schemas.calendar import CalendarError
    from schemas.reference import load_jurisdiction
    from services.closer import calendarcli, sla
    from services.closer.config import get_config

    j = load_jurisdiction(get_settings().jurisdiction_dir)
    category = j.categories.get(args.category)
    if category is None:
        print(f"error: no category {args.category!r} (one of {', '.join(j.categories)})", file=sys.stderr)
        return 2
    street = args.street or j.default_street_id
    if street not in j.streets:
        print(f"error: no street {street!r} (one of {', '.join(j.streets)})", file=sys.stderr)
        return 2
    tz = ZoneInfo(get_config().work_timezone)
    try:
        at = datetime.fromisoformat(args.at) if args.at else datetime.now(tz)
    except ValueError:
        print(f"error: --at {args.at!r} is not an ISO 8601 time (2027-02-05T22:00+08:00)", file=sys.stderr)
        return 2
    at = at if at.tzinfo else at.replace(tzinfo=tz)
    # as the router decides: the category's default priority, and "danger now" makes it urgent
    priority = args.priority or ("urgent" if args.danger_now else category.default_priority)
    try:
        days = calendarcli.operator_calendar()
    except CalendarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cal = sla.StreetCalendars(j, tz.key).on(days).of(street)
    w = sla.what_if(cal, category, priority, args.danger_now, at)
    for line in render_what_if(w, category.id, priority, street, j.streets[street].working_hours, tz):
        print(line)
    return 0


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], service: argparse.ArgumentParser
) -> None:
    """`gridloop staff add|list|disable`, `gridloop sla due` and, under the service's own command,
    `gridloop closer import-photos`."""
    closer_sub = service.add_subparsers(dest="closer_command", metavar="import-photos")
    photos = closer_sub.add_parser(
        "import-photos", help="copy after-photos kept as files (before issue 13) into the database"
    )
    photos.add_argument("--dir", help="the folder of <id>.jpg files (default: the var dir's closer-photos)")
    photos.set_defaults(func=cmd_import_photos)

    staff = sub.add_parser("staff", help="staff accounts")
    staff_sub = staff.add_subparsers(dest="staff_command", required=True)
    add = staff_sub.add_parser("add", help="create or update an account")
    add.add_argument("username")
    add.add_argument("--role", choices=list(ROLES), default="staff")
    add.add_argument("--station", action="append", help="a station id (repeatable)")
    add.add_argument(
        "--street",
        action="append",
        help="a street id a supervisor or admin belongs to (repeatable; default: its stations' streets)",
    )
    add.add_argument("--name")
    add.add_argument("--password", help="default: GRIDLOOP_STAFF_PASSWORD or a prompt")
    add.set_defaults(func=cmd_staff_add)
    staff_sub.add_parser("list", help="list the accounts").set_defaults(func=cmd_staff_list)
    disable = staff_sub.add_parser("disable", help="disable an account")
    disable.add_argument("username")
    disable.set_defaults(func=cmd_staff_disable)

    sla_parser = sub.add_parser("sla", help="SLA what-if for operators")
    sla_sub = sla_parser.add_subparsers(dest="sla_command", required=True)
    due = sla_sub.add_parser("due", help="the deadlines a report would get, its clock and each day's source")
    due.add_argument("--category", required=True, help="a category id, e.g. gas_hazard")
    due.add_argument("--priority", choices=list(PRIORITIES), help="default: as the router decides")
    due.add_argument("--at", help="submission time, ISO 8601 (default: now; no offset: the work time zone)")
    due.add_argument("--street", help="a street id (default: the first street)")
    due.add_argument("--danger-now", action="store_true", help="the rider flagged danger now")
    due.set_defaults(func=cmd_sla_due)

    from services.closer import calendarcli, dutycli

    calendarcli.add_parser(sub)
    dutycli.add_parser(sub)
