"""What the reporter's routers share (kept on app.state.reporter), and the dependencies that hand it out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from sqlmodel import Session

from gridloop import revocations
from gridloop.groupcommit import GroupCommit
from gridloop.net import client_address
from gridloop.rawsql import Tx
from gridloop.service import Runtime
from gridloop.settings import Settings
from gridloop.tokens import Principal, bearer_principal, require_role
from schemas.cases import Role
from schemas.reference import Jurisdiction
from services.reporter.config import ReporterConfig
from services.reporter.credentials import (
    new_rider_token,
    tracking_key_matches,
    valid_rider_token,
)
from services.reporter.models import Report
from services.reporter.ratelimit import RateLimits, client_ref_for
from services.reporter.reports import IntakeContext, ReportAccepted, ReportIn, accept_report, rider_ref_for
from services.reporter.vapid import VapidKeys
from services.reporter.wording import lang_of

T = TypeVar("T")
RIDER_COOKIE = "gl_rider"
LANG_COOKIE = "gl_lang"
RIDER_COOKIE_AGE = 3600 * 24 * 365


TRACKING_HEADER = "X-Tracking-Key"


def token_for(cookie: str | None, secret: str) -> tuple[str, bool]:
    """The rider's token from their cookie when this server signed it, else a new one: (token, is it
    new). A made-up cookie is ignored, so rotating cookies yields no new identity for free."""
    if valid_rider_token(cookie, secret):
        assert cookie is not None
        return cookie, False
    return new_rider_token(secret), True


def set_rider_cookie(response: Response, token: str, secure: bool) -> None:
    """Keep the rider's token on their phone for a year (no account, no personal data)."""
    response.set_cookie(
        RIDER_COOKIE,
        token,
        max_age=RIDER_COOKIE_AGE,
        httponly=True,
        samesite="lax",
        path="/",
        secure=secure,
    )


@dataclass
class Reporter:
    """The reporter's shared parts: plumbing, settings, reference data, secret, limits, the intake batcher."""

    runtime: Runtime
    settings: Settings
    config: ReporterConfig
    jurisdiction: Jurisdiction
    secret: str
    limits: RateLimits
    intake: GroupCommit
    vapid: VapidKeys | None = None
    """The Web Push key pair (services.reporter.vapid); browsers subscribe with its public half."""

    @property
    def base_url(self) -> str:
        """The public base URL, without a trailing slash."""
        return self.settings.public_base_url.rstrip("/")

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run a read in a worker thread."""

        def run() -> T:
            with self.runtime.db.session() as session:
                return work(session)

        return await asyncio.to_thread(run)

    async def write(self, work: Callable[[Session], T]) -> T:
        """Run a write transaction in a worker thread, then wake the outbox relay."""

        def run() -> T:
            with self.runtime.db.session(write=True) as session:
                return work(session)

        result = await asyncio.to_thread(run)
        self.runtime.relay.wake()
        return result

    @property
    def secure_cookie(self) -> bool:
        """The rider cookie's Secure flag: as configured, else on when the public base URL is https."""
        if self.config.rider_cookie_secure is not None:
            return self.config.rider_cookie_secure
        return self.base_url.lower().startswith("https://")

    def set_rider_cookie(self, response: Response, token: str) -> None:
        """Set a newly issued rider token on the response."""
        set_rider_cookie(response, token, self.secure_cookie)

    def rider_token(self, request: Request, response: Response) -> str:
        """The rider's token; a new one is set on the response when the request has no valid one (the
        scan page gives it, so a first report's retry carries the same token as its first try)."""
        token, new = token_for(request.cookies.get(RIDER_COOKIE), self.secret)
        if new:
            self.set_rider_cookie(response, token)
        return token

    def intake_context(self, cookie: str | None, scope: Any) -> tuple[IntakeContext, str | None]:
        """The intake context of a rider's post from the rider cookie and the request's ASGI scope (its
        client address), and the new token to set as the cookie (None when the rider kept theirs)."""
        token, new = token_for(cookie, self.secret)
        rider = rider_ref_for(token, self.secret)
        ctx = IntakeContext(
            channel="scan",
            rider_ref=rider,
            client_ref=client_ref_for(client_address(scope, self.settings.proxies()), self.secret),
            token=token,
            caller=rider,
            secret=self.secret,
        )
        return ctx, token if new else None

    def rider_ref(self, request: Request) -> str | None:
        """The rider reference of the cookie, when the request carries a token this server issued."""
        token = request.cookies.get(RIDER_COOKIE)
        return rider_ref_for(token, self.secret) if token and valid_rider_token(token, self.secret) else None

    def client_ref(self, request: Request) -> str | None:
        """The pseudonym of the client address (X-Forwarded-For only from a trusted proxy)."""
        return client_ref_for(client_address(request, self.settings.proxies()), self.secret)

    def owns(self, request: Request, report: Report) -> bool:
        """The caller holds the report's credential: the rider cookie that sent it, or its tracking
        secret (`?k=`, or the X-Tracking-Key header)."""
        rider = self.rider_ref(request)
        if rider is not None and report.rider_ref is not None and rider == report.rider_ref:
            return True
        key = request.headers.get(TRACKING_HEADER) or request.query_params.get("k")
        return tracking_key_matches(key, report.tracking_hash, self.secret)

    def token_current(self, principal: Principal) -> bool:
        """The TokenCheck of the admin API: the account's newest `staff.tokens_revoked` state (from
        `staff.events`) leaves this token valid; an account never revoked has no row."""
        return revocations.token_current(self.runtime.db, principal)

    def principal(self, request: Request, *roles: Role) -> Principal:
        """The staff caller of an admin route, with one of the roles (a revoked token is 401)."""
        found = bearer_principal(request.headers.get("Authorization"), self.secret, self.token_current)
        return require_role(found, *roles) if roles else found

    async def submit(self, body: ReportIn, ctx: IntakeContext, idempotency_key: str | None) -> ReportAccepted:
        """Accept a report: stored with its event before the answer; a racing duplicate key is a replay."""
        ctx.limits = ctx.limits or self.limits

        def work(session: Tx) -> ReportAccepted:
            answer, _created = accept_report(
                session, body, ctx, self.jurisdiction, idempotency_key, self.base_url
            )
            return answer

        # reports arriving together share one transaction (each in its own savepoint); a request
        # that lost a race on its Idempotency-Key is run again after the winner and answers as it did
        answer = await self.intake.run(work)
        self.runtime.relay.wake()
        return answer


def reporter(request: Request) -> Reporter:
    """The reporter's shared parts."""
    ctx: Reporter = request.app.state.reporter
    return ctx


def admin(request: Request) -> Principal:
    """The caller of a route for admins only (bearer token)."""
    return reporter(request).principal(request, "admin")


def admin_or_supervisor(request: Request) -> Principal:
    """The caller of a listing open to admins and supervisors (bearer token)."""
    return reporter(request).principal(request, "admin", "supervisor", "city")


def staff(request: Request) -> Principal:
    """Any signed-in staff caller (bearer token); the route checks what they may see."""
    return reporter(request).principal(request)


def language(request: Request) -> str:
    """The rider's language: ?lang=, else their language cookie, else Chinese."""
    return lang_of(request.query_params.get("lang") or request.cookies.get(LANG_COOKIE))


def rider_ref(request: Request) -> str | None:
    """The rider reference of the request's cookie (None without one)."""
    return reporter(request).rider_ref(request)


Ctx = Annotated[Reporter, Depends(reporter)]
Admin = Annotated[Principal, Depends(admin)]
AdminOrSupervisor = Annotated[Principal, Depends(admin_or_supervisor)]
Staff = Annotated[Principal, Depends(staff)]
RiderRef = Annotated[str | None, Depends(rider_ref)]
Lang = Annotated[str, Depends(language)]
