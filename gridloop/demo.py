"""Demo data shared by the services: the 殷行街道 places with their report codes, the demo password."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gridloop.clock import utcnow
from gridloop.db import Database
from gridloop.settings import REPO_ROOT, Settings
from schemas.reference import Jurisdiction, Place, load_places

if TYPE_CHECKING:
    from services.closer.cli import DemoAccount

DEMO_PLACES = REPO_ROOT / "data" / "demo" / "places.json"
DEMO_PASSWORD = "gridloop-demo"
DEMO_STREET = "yinhang"


def load_demo_places(db: Database, j: Jurisdiction, path: Path = DEMO_PLACES) -> list[Place]:
    """Insert the demo places and codes into the reporter's database (existing ones are kept)."""
    from services.reporter.models import Place as PlaceRow
    from services.reporter.models import ReportCode

    places = load_places(path)
    now = utcnow()
    with db.session(write=True) as session:
        for p in places:
            if session.get(PlaceRow, p.place_id) is None:
                session.add(
                    PlaceRow(
                        place_id=p.place_id,
                        name_zh=p.name_zh,
                        name_en=p.name_en,
                        lat=p.lat,
                        lon=p.lon,
                        grid_id=p.grid_id,
                        station_id=j.grids[p.grid_id].station_id,
                        created_at=now,
                    )
                )
                session.flush()
            if session.get(ReportCode, p.code) is None:
                session.add(ReportCode(code=p.code, place_id=p.place_id, created_at=now))
    return places


def load_demo(settings: Settings, j: Jurisdiction) -> tuple[list[Place], list[DemoAccount]]:
    """Load demo places (reporter) and accounts (closer, through its own `load_demo`)."""
    from services.closer import cli as closer_cli
    from services.reporter.models import Base as ReporterBase

    reporter_db = Database(settings.db_url("reporter"), ReporterBase.metadata)
    try:
        places = load_demo_places(reporter_db, j)
    finally:
        reporter_db.dispose()
    return places, closer_cli.load_demo(settings, j)
