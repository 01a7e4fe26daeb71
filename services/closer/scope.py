"""Which stations an account sees: the one rule every staff-facing query filters by."""

from __future__ import annotations

from gridloop.tokens import Principal
from schemas.reference import Jurisdiction


def visible_stations(who: Principal, j: Jurisdiction) -> frozenset[str] | None:
    """The stations whose cases (and figures, topics) `who` may see; None means every station."""
    if who.role == "staff":
        return frozenset(s for s in who.stations if s in j.stations)
    return None


def can_see(who: Principal, j: Jurisdiction, station_id: str | None) -> bool:
    """`who` may see a case (or topic) of this station; a station outside their scope is a 404."""
    visible = visible_stations(who, j)
    return visible is None or (station_id is not None and station_id in visible)
