"""What the router's HTTP routes share (kept on app.state.router)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gridloop.service import Runtime
from schemas.reference import Jurisdiction
from services.router.decisions import Decisions
from services.router.places import PlaceBook


@dataclass
class Router:
    """The router's shared parts: plumbing, reference data, the decisions and the code book."""

    runtime: Runtime
    jurisdiction: Jurisdiction
    decisions: Decisions
    places: PlaceBook


def router_parts(request: Request) -> Router:
    """The router's shared parts."""
    ctx: Router = request.app.state.router
    return ctx


Ctx = Annotated[Router, Depends(router_parts)]
