"""Demo data: the 殷行街道 places with their report codes, and staff accounts for every station."""

from __future__ import annotations

from dataclasses import dataclass

from gridloop.db import Database
from gridloop.settings import REPO_ROOT, Settings
from schemas.reference import Jurisdiction, Place

DEMO_PLACES = REPO_ROOT / "data" / "demo" / "places.json"
DEMO_PASSWORD = "gridloop-demo"
DEMO_STREET = "yinhang"


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


def load_demo(settings: Settings, j: Jurisdiction) -> tuple[list[Place], list[DemoAccount]]:
    """Load demo places (reporter) and accounts (closer) into their databases."""
    from services.closer.models import Base as CloserBase
    from services.reporter import cli as reporter_cli

    closer_db = Database(settings.db_url("closer"), CloserBase.metadata)
    try:
        return reporter_cli.load_demo(settings, j), load_demo_staff(closer_db, j)
    finally:
        closer_db.dispose()
