"""Places and their report codes: create, issue, look up, list, deactivate, replace (API, pages, CLI)."""

from __future__ import annotations

import random
import re
import secrets
from dataclasses import dataclass

from pydantic import ConfigDict, Field
from sqlmodel import Session, col, select

from gridloop.clock import utcnow
from gridloop.errors import ApiError
from schemas import codes
from schemas.reference import Jurisdiction
from services.reporter.credentials import PlainIn
from services.reporter.models import Place, ReportCode

_PLACE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class PlaceIn(PlainIn):
    """A new place: where a code will be posted."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    place_id: str | None = Field(None, max_length=40, description="Slug; generated when left out.")
    name_zh: str = Field(min_length=1, max_length=120)
    name_en: str = Field("", max_length=120)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    issue_code: bool = Field(True, description="Issue a report code for the place at once.")


class CodeIn(PlainIn):
    """Issue a further code for an existing place."""

    model_config = ConfigDict(extra="forbid")

    place_id: str = Field(min_length=1, max_length=40)


class CodeChange(PlainIn):
    """Why a code is deactivated or replaced (kept with the code)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    note: str | None = Field(None, max_length=200)


@dataclass(frozen=True)
class CodeLookup:
    """What a code leads to: a place, or why not (unknown, mistyped, deactivated)."""

    code: str | None
    place: Place | None
    problem: str | None = None
    replaced_by: str | None = None


@dataclass(frozen=True)
class CodeRow:
    """A code with its place, as listed and printed."""

    code: ReportCode
    place: Place


def place_json(place: Place) -> dict[str, object]:
    """A place as the admin API shows it."""
    return {
        "place_id": place.place_id,
        "name_zh": place.name_zh,
        "name_en": place.name_en,
        "lat": place.lat,
        "lon": place.lon,
        "grid_id": place.grid_id,
        "station_id": place.station_id,
        "active": place.active,
    }


def code_json(row: ReportCode, base_url: str) -> dict[str, object]:
    """A code as the admin API shows it, with its rider URL and QR images."""
    base = base_url.rstrip("/")
    return {
        "code": row.code,
        "printed": codes.format_code(row.code),
        "place_id": row.place_id,
        "active": row.active,
        "replaced_by": row.replaced_by,
        "note": row.note,
        "url": f"{base}/r/{row.code}",
        "svg": f"{base}/api/v1/codes/{row.code}.svg",
        "png": f"{base}/api/v1/codes/{row.code}.png",
    }


def create_place(
    session: Session, j: Jurisdiction, body: PlaceIn, allowed: frozenset[str] | None = None
) -> tuple[Place, ReportCode | None]:
    """Store a place in the grid its coordinates fall in, and (by default) a code for it; `allowed`:
    the stations the caller manages (gridloop/scope.py; None: every station)."""
    grid = j.grid_at(body.lat, body.lon)
    if grid is None:
        raise ApiError(
            422, "outside_jurisdiction", "The point is in no grid of the jurisdiction.", {"lat": body.lat}
        )
    if allowed is not None and grid.station_id not in allowed:
        raise ApiError(403, "outside_your_streets", "The point is in a street you do not manage.")
    place_id = body.place_id or f"p-{secrets.token_hex(4)}"
    if not _PLACE_ID.match(place_id):
        raise ApiError(422, "invalid", "place_id: lower-case letters, digits, - and _ only.")
    if session.get(Place, place_id) is not None:
        raise ApiError(409, "place_exists", f"A place {place_id!r} exists already.")
    place = Place(
        place_id=place_id,
        name_zh=body.name_zh,
        name_en=body.name_en,
        lat=body.lat,
        lon=body.lon,
        grid_id=grid.id,
        station_id=grid.station_id,
        created_at=utcnow(),
    )
    session.add(place)
    session.flush()
    code = issue_code(session, place_id) if body.issue_code else None
    return place, code


def issue_code(
    session: Session, place_id: str, rng: random.Random | None = None, allowed: frozenset[str] | None = None
) -> ReportCode:
    """A fresh code for an active place (404 for an unknown one, or one outside `allowed`)."""
    place = session.get(Place, place_id)
    if place is None or not place.active or (allowed is not None and place.station_id not in allowed):
        raise ApiError(404, "unknown_place", f"No place {place_id!r}.")
    for _ in range(20):  # 29^7 codes: a collision is rare, two in a row rarer still
        candidate = codes.new_code(rng)
        if session.get(ReportCode, candidate) is None:
            row = ReportCode(code=candidate, place_id=place_id, created_at=utcnow())
            session.add(row)
            session.flush()
            return row
    raise ApiError(503, "unavailable", "Could not find a free code; try again.")


def lookup_code(session: Session, raw: str) -> CodeLookup:
    """Resolve a typed or scanned code without raising: the page explains what is wrong."""
    try:
        code = codes.validate(raw)
    except codes.CodeError as exc:
        return CodeLookup(None, None, "check" if exc.reason == "check" else "unknown")
    row = session.get(ReportCode, code)
    place = session.get(Place, row.place_id) if row else None
    if row is None or place is None or not place.active:
        return CodeLookup(code, None, "unknown")
    if not row.active:
        return CodeLookup(code, place, "deactivated", row.replaced_by)
    return CodeLookup(code, place)


def _code(session: Session, raw: str, allowed: frozenset[str] | None = None) -> ReportCode:
    try:
        code = codes.validate(raw)
    except codes.CodeError as exc:
        raise ApiError(422, "check_the_code" if exc.reason == "check" else "bad_code", exc.message) from exc
    row = session.get(ReportCode, code)
    place = session.get(Place, row.place_id) if row is not None and allowed is not None else None
    if row is None or (allowed is not None and (place is None or place.station_id not in allowed)):
        raise ApiError(404, "unknown_code", "No place has this report code.")  # another street's: private
    return row


def deactivate_code(
    session: Session, raw: str, note: str | None = None, allowed: frozenset[str] | None = None
) -> ReportCode:
    """Take a code out of use (again is harmless); riders scanning it get the deactivated page."""
    row = _code(session, raw, allowed)
    if row.active:
        row.active = False
        row.deactivated_at = utcnow()
        row.note = note or row.note
        session.add(row)
    return row


def replace_code(
    session: Session, raw: str, note: str | None = None, allowed: frozenset[str] | None = None
) -> tuple[ReportCode, ReportCode]:
    """Deactivate a damaged code and issue its successor for the same place, in one transaction."""
    old = _code(session, raw, allowed)
    if old.replaced_by:
        raise ApiError(
            409,
            "already_replaced",
            f"{old.code} was replaced by {old.replaced_by}.",
            {"replaced_by": old.replaced_by},
        )
    new = issue_code(session, old.place_id)
    old.active = False
    old.deactivated_at = old.deactivated_at or utcnow()
    old.replaced_by = new.code
    old.note = note or old.note or "replaced"
    session.add(old)
    return old, new


def list_codes(
    session: Session,
    station_id: str | None = None,
    place_id: str | None = None,
    include_inactive: bool = False,
) -> list[CodeRow]:
    """Codes with their places, by station and place name."""
    query = select(ReportCode, Place).where(col(ReportCode.place_id) == col(Place.place_id))
    if station_id:
        query = query.where(col(Place.station_id) == station_id)
    if place_id:
        query = query.where(col(Place.place_id) == place_id)
    if not include_inactive:
        query = query.where(col(ReportCode.active).is_(True), col(Place.active).is_(True))
    query = query.order_by(col(Place.station_id), col(Place.place_id), col(ReportCode.created_at))
    return [CodeRow(code, place) for code, place in session.exec(query).all()]
