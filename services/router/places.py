"""Report codes to places, for `explain?code=`, without reading the reporter's database.

The reporter owns places and codes. The router knows a code's place from two read-only sources:

1. the reference places file (``data/demo/places.json``), versioned data every service may read:
   the printed demo codes, with their surveyed points, explainable before anyone has reported;
2. places it has seen on reports: every `report.submitted` with a code carries the place's id,
   name, grid and a point (the rider's GPS when sent, else the place's), and the router keeps the
   latest (table ``known_place``), so codes an admin created at run time are known once used.

A code in neither is 404 with a hint to ask by point instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gridloop.errors import ApiError
from gridloop.rawsql import Raw
from schemas import codes
from schemas.events import ReportSubmitted
from schemas.reference import Jurisdiction, ReferenceError, load_places

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodePlace:
    """Where a report code is."""

    code: str
    place_id: str
    name: str | None
    grid_id: str | None
    lat: float
    lon: float
    source: str  # "reports" or "reference"


class PlaceBook:
    """Looks up report codes: the reference file first (surveyed points), then places seen on reports."""

    def __init__(self, jurisdiction: Jurisdiction, reference_file: Path | None) -> None:
        self.reference: dict[str, CodePlace] = {}
        if reference_file is not None and reference_file.exists():
            try:
                places = load_places(reference_file, jurisdiction)
            except ReferenceError:
                # the router routes without it; only explain-by-code of demo codes is lost
                log.exception(
                    "reference places file %s is invalid; explain by code uses reports only", reference_file
                )
                places = []
            self.reference = {
                p.code: CodePlace(p.code, p.place_id, p.name_zh, p.grid_id, p.lat, p.lon, "reference")
                for p in places
            }

    @staticmethod
    def learn(raw: Raw, data: ReportSubmitted, seen_at: datetime) -> None:
        """Remember the place of a report that came with a code and a point.

        Most reports repeat what the row says already: then it is written at most once an hour (to
        keep `seen_at` roughly current), not once a report."""
        if not data.code or not data.place_id or data.location is None:
            return
        raw.run(
            "INSERT INTO known_place (code, place_id, name, grid_id, lat, lon, seen_at) "
            "VALUES (:code, :place_id, :name, :grid_id, :lat, :lon, :seen_at) "
            "ON CONFLICT (code) DO UPDATE SET place_id = excluded.place_id, name = excluded.name, "
            "grid_id = excluded.grid_id, lat = excluded.lat, lon = excluded.lon, seen_at = excluded.seen_at "
            "WHERE known_place.seen_at < :stale OR known_place.place_id <> excluded.place_id "
            "OR known_place.lat <> excluded.lat OR known_place.lon <> excluded.lon "
            # IS DISTINCT FROM, spelled so SQLite before 3.39 takes it too
            "OR NOT (known_place.name = excluded.name "
            "OR (known_place.name IS NULL AND excluded.name IS NULL)) "
            "OR NOT (known_place.grid_id = excluded.grid_id "
            "OR (known_place.grid_id IS NULL AND excluded.grid_id IS NULL))",
            {
                "code": data.code,
                "place_id": data.place_id,
                "name": data.place_name,
                "grid_id": data.grid_id,
                "lat": data.location.lat,
                "lon": data.location.lon,
                "seen_at": raw.ts(seen_at),
                "stale": raw.ts(seen_at - timedelta(hours=1)),
            },
        )

    def resolve(self, db: Raw, raw: str) -> CodePlace:
        """The place of a typed or scanned code; ApiError 422 for a malformed code, 404 for an unknown one."""
        try:
            code = codes.validate(raw)
        except codes.CodeError as exc:
            error = "check_the_code" if exc.reason == "check" else "bad_code"
            raise ApiError(422, error, f"{exc.message_zh} — {exc.message}") from exc
        found = self.reference.get(code)
        if found is not None:
            return found
        row = db.first(
            "SELECT place_id, name, grid_id, lat, lon FROM known_place WHERE code = :code", {"code": code}
        )
        if row is None:
            raise ApiError(
                404,
                "unknown_code",
                "路由服务不认识这个报告码，请改用经纬度查询 — the router does not know this code; "
                "ask with lat and lon instead.",
            )
        place_id, name, grid_id, lat, lon = row
        return CodePlace(code, place_id, name, grid_id, lat, lon, "reports")
