"""What the notifier's HTTP routes share (kept on app.state.notifier)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gridloop import revocations
from gridloop.service import Runtime
from gridloop.tokens import Principal, bearer_principal, require_role
from schemas.cases import Role
from schemas.reference import Jurisdiction
from services.notifier.config import NotifierConfig
from services.notifier.rules import Rule
from services.notifier.sender import Sender


@dataclass
class Notifier:
    """The notifier's shared parts: plumbing, reference data, rules, the sender and the signing key."""

    runtime: Runtime
    jurisdiction: Jurisdiction
    rules: list[Rule]
    config: NotifierConfig
    sender: Sender
    secret: str

    def token_current(self, principal: Principal) -> bool:
        """The account's newest `staff.tokens_revoked` state (from `staff.events`) leaves this token valid;
        an account never revoked has no row."""
        return revocations.token_current(self.runtime.db, principal)

    def principal(self, request: Request, *roles: Role) -> Principal:
        """The staff caller, with one of the roles (a revoked token is 401, another role 403)."""
        found = bearer_principal(request.headers.get("Authorization"), self.secret, self.token_current)
        return require_role(found, *roles)


def notifier_parts(request: Request) -> Notifier:
    """The notifier's shared parts."""
    ctx: Notifier = request.app.state.notifier
    return ctx


def admin(request: Request) -> Principal:
    """The caller of an admin route (bearer token)."""
    return notifier_parts(request).principal(request, "admin")


def admin_or_supervisor(request: Request) -> Principal:
    """The caller of a listing open to admins and the centre's supervisors (bearer token)."""
    return notifier_parts(request).principal(request, "admin", "supervisor", "city")


Ctx = Annotated[Notifier, Depends(notifier_parts)]
Admin = Annotated[Principal, Depends(admin)]
Overseer = Annotated[Principal, Depends(admin_or_supervisor)]
