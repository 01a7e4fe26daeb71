"""Which stations an account sees: the one rule every staff-facing query filters by (the closer's
queue, case pages and figures; the reporter's places and codes)."""

from __future__ import annotations

from collections.abc import Iterable

from gridloop.tokens import Principal
from schemas.cases import Role
from schemas.reference import Jurisdiction

Scope = frozenset[str] | None
"""The stations a request covers; None means every station (a `city` account, or no filter)."""


def account_streets(
    role: Role | str, stations: Iterable[str], streets: Iterable[str], j: Jurisdiction
) -> tuple[tuple[str, ...], bool]:
    """The streets an account belongs to, and whether they are the default street by fallback.

    Explicit streets (known ones) win; else the streets of its stations (a centre station belongs
    to a street); else, for a supervisor or admin with neither (an account made before streets
    existed), the default street, and `True` so the caller can warn. A `city` account belongs to no
    street: it sees them all."""
    if role == "city":
        return (), False
    explicit = tuple(dict.fromkeys(s for s in streets if s in j.streets))
    if explicit:
        return explicit, False
    of_stations = tuple(dict.fromkeys(j.stations[s].street_id for s in stations if s in j.stations))
    if of_stations or role == "staff":
        return of_stations, False
    return (j.default_street_id,), True


def visible_stations(who: Principal, j: Jurisdiction) -> frozenset[str] | None:
    """The stations whose cases (and figures, topics) `who` may see; None means every station.

    Staff: their own stations. Supervisor and admin: every station of their streets (the token's
    `streets` claim; none, as in a token from before streets, sees nothing). City: every station."""
    if who.role == "city":
        return None
    if who.role == "staff":
        return frozenset(s for s in who.stations if s in j.stations)
    return frozenset(s.id for street in who.streets for s in j.stations_of(street))


def can_see(who: Principal, j: Jurisdiction, station_id: str | None) -> bool:
    """`who` may see a case (or topic) of this station; a station outside their scope is a 404."""
    visible = visible_stations(who, j)
    return visible is None or (station_id is not None and station_id in visible)


def visible_streets(who: Principal, j: Jurisdiction) -> list[str]:
    """The streets `who` sees some station of, in the jurisdiction's order (every street for city)."""
    visible = visible_stations(who, j)
    return [s for s in j.streets if visible is None or any(st.id in visible for st in j.stations_of(s))]


def narrow(visible: Scope, stations: Iterable[str]) -> frozenset[str]:
    """The stations of `stations` inside `visible` (a filter the caller picked, kept in scope)."""
    wanted = frozenset(stations)
    return wanted if visible is None else wanted & visible


OVERSEERS = ("supervisor", "admin", "city")
"""The roles that see the centre's lists (triage, returns, supervision ...) within their scope."""


def oversees(who: Principal) -> bool:
    """`who` sees the centre's lists and every station of their scope, not only their own."""
    return who.role in OVERSEERS
