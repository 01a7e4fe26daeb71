"""What the reporter's route modules share: plumbing, reference data, settings, and the intake call."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request, Response
from sqlmodel import Session

from gridloop.groupcommit import GroupCommit
from gridloop.rawsql import Tx
from gridloop.service import Runtime
from gridloop.settings import Settings
from gridloop.tokens import Principal, bearer_principal, require_role
from schemas.cases import Role
from schemas.reference import Jurisdiction
from services.reporter.intake import IntakeContext, ReportAccepted, ReportIn, accept_report, rider_ref_for
from services.reporter.ratelimit import RateLimits, client_ref_for

T = TypeVar("T")
RIDER_COOKIE = "gl_rider"
LANG_COOKIE = "gl_lang"
RIDER_COOKIE_AGE = 3600 * 24 * 365


def token_for(cookie: str | None) -> tuple[str, bool]:
    """The rider's token from their cookie, or a new one: (token, is it new)."""
    if cookie and 16 <= len(cookie) <= 64:
        return cookie, False
    return secrets.token_urlsafe(18), True


def set_rider_cookie(response: Response, token: str) -> None:
    """Keep the rider's token on their phone for a year (no account, no personal data)."""
    response.set_cookie(
        RIDER_COOKIE, token, max_age=RIDER_COOKIE_AGE, httponly=True, samesite="lax", path="/"
    )


@dataclass
class Deps:
    """The reporter's shared parts, handed to each group of routes."""

    runtime: Runtime
    settings: Settings
    jurisdiction: Jurisdiction
    secret: str
    limits: RateLimits
    intake: GroupCommit

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

    def rider_token(self, request: Request, response: Response | None) -> str:
        """The rider's cookie token; a new one is set on the response when there is none."""
        token, new = token_for(request.cookies.get(RIDER_COOKIE))
        if new and response is not None:
            set_rider_cookie(response, token)
        return token

    def intake_context(self, cookie: str | None, address: str | None) -> tuple[IntakeContext, str | None]:
        """The intake context of a rider's post from the rider cookie and the client address, and the
        new token to set as the cookie (None when the rider kept theirs)."""
        token, new = token_for(cookie)
        ctx = IntakeContext(
            channel="scan",
            rider_ref=rider_ref_for(token, self.secret),
            client_ref=client_ref_for(address, self.secret),
        )
        return ctx, token if new else None

    def rider_ref(self, request: Request) -> str | None:
        """The rider reference of the cookie, when the request carries one."""
        token = request.cookies.get(RIDER_COOKIE)
        return rider_ref_for(token, self.secret) if token else None

    def client_ref(self, request: Request) -> str | None:
        """The pseudonym of the client address (uvicorn resolves X-Forwarded-For from trusted proxies)."""
        return client_ref_for(request.client.host if request.client else None, self.secret)

    def principal(self, request: Request, *roles: Role) -> Principal:
        """The staff caller of an admin route, with one of the roles."""
        found = bearer_principal(request.headers.get("Authorization"), self.secret)
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
