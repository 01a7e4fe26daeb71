"""`gridloop duty import FILE`: the duty roster (值班) from a shell.

`import` is `dutystore.import_csv`, the same path as `POST /api/v1/duty/{street}/import`: every row
is added, or none (each bad row named by its line). The CSV columns are in services/closer/duty.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gridloop.settings import get_settings

if TYPE_CHECKING:  # the database side is imported when a command runs: `gridloop --help` stays quick
    from gridloop.db import Database


def _database() -> Database:
    from gridloop.db import Database
    from services.closer.models import Base

    return Database(get_settings().db_url("closer"), Base.metadata)


def cmd_import(args: argparse.Namespace) -> int:
    """Add every shift of a roster CSV, or none."""
    from zoneinfo import ZoneInfo

    from gridloop.clock import utcnow
    from schemas.reference import load_jurisdiction
    from services.closer import duty, dutystore
    from services.closer.config import get_config

    path = Path(args.file)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        print(f"error: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"error: {path}: not UTF-8 text", file=sys.stderr)
        return 2
    settings = get_settings()
    j = load_jurisdiction(settings.jurisdiction_dir)
    db = _database()
    try:
        with db.session(write=True) as session:
            n = dutystore.import_csv(
                session, j, text, ZoneInfo(get_config().work_timezone), "cli", utcnow(), args.street
            )
    except duty.RosterError as exc:
        print(f"error: {path.name}: nothing imported", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(f"{n} shifts imported from {path.name}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`gridloop duty import`."""
    top = sub.add_parser("duty", help="the duty roster (值班): who is on duty out of hours")
    top_sub = top.add_subparsers(dest="duty_command", required=True)
    imp = top_sub.add_parser(
        "import", help="add a roster CSV (street,date,start,end,station,staff), all rows or none"
    )
    imp.add_argument("file")
    imp.add_argument("--street", help="refuse rows of any other street")
    imp.set_defaults(func=cmd_import)
