"""The closer's commands (`gridloop staff add|list|disable`, `gridloop closer import-photos`, and
`gridloop calendar` from calendarcli.py) and its demo accounts.

`gridloop/cli.py` mounts `add_parser`; `gridloop demo load` and `gridloop up` call `load_demo`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gridloop.demo import DEMO_PASSWORD
from gridloop.settings import Settings, get_settings
from schemas.cases import ROLES

if TYPE_CHECKING:  # the database side is imported when a command runs: `gridloop --help` stays quick
    from gridloop.db import Database
    from schemas.reference import Jurisdiction


@dataclass(frozen=True)
class DemoAccount:
    """A demo login printed by `gridloop up`."""

    username: str
    role: str
    stations: list[str]


def demo_accounts(j: Jurisdiction) -> list[DemoAccount]:
    """One account per station (staff), one per centre (supervisor), and an admin."""
    accounts: list[DemoAccount] = []
    for station in j.stations.values():
        role = "supervisor" if station.kind == "centre" else "staff"
        accounts.append(DemoAccount(station.id, role, [station.id]))
    accounts.append(DemoAccount("admin", "admin", []))
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
                add_staff(session, acc.username, DEMO_PASSWORD, acc.role, acc.stations)  # type: ignore[arg-type]
    return accounts


def load_demo(settings: Settings, j: Jurisdiction) -> list[DemoAccount]:
    """The closer's demo data: a staff account per station, a supervisor per centre, an admin."""
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
    from services.closer.staff import add_staff

    password = args.password or os.environ.get("GRIDLOOP_STAFF_PASSWORD") or getpass.getpass("Password: ")
    db = _database()
    try:
        with db.session(write=True) as session:
            add_staff(session, args.username, password, args.role, args.station or [], args.name or "")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(f"{args.username}: {args.role} {','.join(args.station or []) or '(all stations)'}")
    return 0


def cmd_staff_list(_args: argparse.Namespace) -> int:
    """List the staff accounts."""
    from sqlmodel import col, select

    from services.closer.models import Staff

    db = _database()
    try:
        with db.session() as session:
            for s in session.exec(select(Staff).order_by(col(Staff.username))):
                state = "active" if s.active else "disabled"
                print(f"{s.username:20} {s.role:10} {','.join(s.station_ids) or '(all stations)':20} {state}")
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


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], service: argparse.ArgumentParser
) -> None:
    """`gridloop staff add|list|disable` and, under the service's own command, `gridloop closer
    import-photos`."""
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
    add.add_argument("--name")
    add.add_argument("--password", help="default: GRIDLOOP_STAFF_PASSWORD or a prompt")
    add.set_defaults(func=cmd_staff_add)
    staff_sub.add_parser("list", help="list the accounts").set_defaults(func=cmd_staff_list)
    disable = staff_sub.add_parser("disable", help="disable an account")
    disable.add_argument("username")
    disable.set_defaults(func=cmd_staff_disable)

    from services.closer import calendarcli

    calendarcli.add_parser(sub)
