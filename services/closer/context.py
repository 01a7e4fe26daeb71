"""What the closer's routers share (kept on app.state.closer), and the caller's identity."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import select

from gridloop import net
from gridloop.errors import ApiError
from gridloop.net import address_key
from gridloop.scope import Scope, account_streets, can_see, narrow, visible_stations
from gridloop.service import Runtime
from gridloop.settings import Settings, derive_key
from gridloop.tokens import Principal, read_token
from schemas.reference import Jurisdiction
from services.closer.calendar import Calendar, Official
from services.closer.config import CloserConfig
from services.closer.lifecycle import Lifecycle
from services.closer.models import Staff
from services.closer.poller import TimelinePoller

SESSION_COOKIE = "gl_session"
log = logging.getLogger(__name__)


@dataclass
class Closer:
    """The closer's shared parts: plumbing, reference data, lifecycle, the live queue's poller, secrets,
    and the working calendar in use (with its shipped years, read once at start-up)."""

    runtime: Runtime
    settings: Settings
    config: CloserConfig
    jurisdiction: Jurisdiction
    lifecycle: Lifecycle
    poller: TimelinePoller
    secret: str
    calendar: Calendar
    shipped_years: dict[int, Official]

    def changed(self) -> None:
        """A change was committed: wake the live queue's poller and the outbox relay."""
        self.poller.notify()
        self.runtime.relay.wake()

    def token_current(self, who: Principal) -> bool:
        """The closer's TokenCheck: the account is active, its token version is the token's `ver`
        and its role, stations and streets are the token's (one lookup on the unique username index; no
        cache, so a revocation holds from the next request on)."""
        with self.runtime.db.session() as session:
            row = session.exec(select(Staff).where(Staff.username == who.username)).first()
        if row is None:
            return False
        held, _ = account_streets(row.role, row.station_ids, row.street_ids, self.jurisdiction)
        return (
            bool(row.active)
            and row.token_version == who.version
            and row.role == who.role
            and row.stations == ",".join(who.stations)
            and held == who.streets
        )

    def signed_in_streets(
        self, username: str, role: str, stations: list[str], streets: list[str]
    ) -> list[str]:
        """The streets a new token of this account carries; an old supervisor or admin with neither
        streets nor stations gets the default street, with a warning to give it one."""
        held, defaulted = account_streets(role, stations, streets, self.jurisdiction)
        if defaulted:
            log.warning(
                "staff %s (%s) has no street and no station: it sees the default street %s; give it one "
                "(`gridloop staff add %s --role %s --street <street>`)",
                username,
                role,
                held[0],
                username,
                role,
            )
        return list(held)

    def csrf_token(self, who: Principal) -> str:
        """The CSRF token of a console session: bound to the session's token id, unforgeable."""
        return hmac.new(derive_key(self.secret, "csrf"), who.token_id.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, who: Principal, given: str | None) -> None:
        """403 unless the form carried this session's CSRF token."""
        if not given or not hmac.compare_digest(given, self.csrf_token(who)):
            raise ApiError(403, "csrf_failed", "The form is stale or forged; reload the page.")

    def station_scope(self, who: Principal, station: str | None) -> str | None:
        """The one station a request names (None: every station the caller sees, for supervisors and
        city); 404 for one outside the caller's scope (services/closer/scope.py)."""
        if station is None:
            if who.role == "staff":
                if len(who.stations) != 1:
                    raise ApiError(422, "station_required", "Name the station.")
                return who.stations[0]
            return None
        if station not in self.jurisdiction.stations or not can_see(who, self.jurisdiction, station):
            raise ApiError(404, "not_found", "No such station.")
        return station

    def scope(self, who: Principal, station: str | None, street: str | None = None) -> Scope:
        """The stations a request covers: the one it names, else those of the street it names (a
        filter for a city account), else every station the caller sees; 404 outside the caller's scope."""
        if station is not None:
            return frozenset({self.station_scope(who, station) or station})
        visible = visible_stations(who, self.jurisdiction)
        if street is None:
            return visible
        if street not in self.jurisdiction.streets:
            raise ApiError(404, "not_found", "No such street.")
        picked = frozenset(s.id for s in self.jurisdiction.stations_of(street))
        if visible is not None and not picked & visible:
            raise ApiError(404, "not_found", "No such street.")
        return narrow(visible, picked)


def closer(request: Request) -> Closer:
    """The closer's shared parts."""
    ctx: Closer = request.app.state.closer
    return ctx


def client_address(request: Request) -> str:
    """The client address sign-ins are throttled by: the forwarded address behind a trusted proxy
    (GRIDLOOP_TRUSTED_PROXIES), else the peer; an IPv6 client by its /64, which one subscriber
    usually holds whole."""
    settings: Settings = request.app.state.closer.settings
    return address_key(net.client_address(request, settings.proxies())) or "unknown"


def session_token(request: Request, allow_cookie: bool) -> str | None:
    """The token a request carries (bearer header, else the console cookie when allowed)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if allow_cookie:
        return request.cookies.get(SESSION_COOKIE) or None
    return None


async def identify(request: Request, allow_cookie: bool) -> Principal:
    """The caller from a bearer token (or the console's cookie when allowed); 401 otherwise."""
    ctx = closer(request)
    given = session_token(request, allow_cookie)
    if not given:
        raise ApiError(401, "unauthorized", "Sign in first.", headers={"WWW-Authenticate": "Bearer"})
    # signature, expiry, then revocation (401 token_revoked): the staff table is read off the loop
    return await asyncio.to_thread(read_token, given, ctx.secret, ctx.token_current)


async def bearer(request: Request) -> Principal:
    """The caller of an API endpoint: a bearer token (state-changing calls take no cookies: no CSRF)."""
    return await identify(request, allow_cookie=False)


async def reader(request: Request) -> Principal:
    """The caller of a read-only endpoint: a bearer token or the console's session cookie."""
    return await identify(request, allow_cookie=True)


Ctx = Annotated[Closer, Depends(closer)]
Who = Annotated[Principal, Depends(bearer)]
Reader = Annotated[Principal, Depends(reader)]
