"""The router service: consumes submitted reports, decides their case, publishes `reports.routed`.

`build()` wires the parts: the two consumers (``handlers``), the explain route (``api``), and what
they share (``context.Router``). The rules are in ``routing``, the case index in ``index``, the
written decision in ``decisions`` (README.md has the map).
"""

from __future__ import annotations

from typing import get_args

from fastapi import FastAPI

from gridloop import metrics
from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, REPORTS_ROUTED, REPORTS_SUBMITTED
from schemas.events import Decision, ReportRouted
from schemas.reference import load_jurisdiction
from services.router import api
from services.router.config import RouterConfig, get_config
from services.router.context import Router
from services.router.decisions import SERVICE, Decisions
from services.router.handlers import CASE_STATE_EVENTS, Handlers
from services.router.models import PLUMBING, Base
from services.router.places import PlaceBook


def build(settings: Settings | None = None, config: RouterConfig | None = None) -> FastAPI:
    """Create the router's app and its consumers."""
    settings = settings or get_settings()
    config = config or get_config()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    decisions = Decisions(jurisdiction)
    ctx = Router(runtime, jurisdiction, decisions, PlaceBook(jurisdiction, config.places_file))

    handlers = Handlers(decisions)
    runtime.consumer(
        "router",
        [REPORTS_SUBMITTED],
        {"report.submitted": handlers.on_submitted},
        replays={"report.submitted": handlers.replay},
        plain_sql=True,
        on_begin=decisions.lock_batch,  # the batch's routing locks, before any report in it reads
    )
    runtime.consumer(
        "router-cases",
        [CASES_EVENTS],
        {name: handlers.on_case_event for name in CASE_STATE_EVENTS},
        plain_sql=True,
    )
    runtime.document_publication(REPORTS_ROUTED, ReportRouted, "One decision per report, keyed by case id.")
    for decision in get_args(Decision):
        metrics.route_decisions.labels(decision)  # every series exists from the start, at 0

    app = create_app(runtime, "GridLoop router", "Routes reports to grid stations; explains decisions.")
    app.state.router = ctx
    app.state.jurisdiction = jurisdiction
    app.include_router(api.router)
    return app
