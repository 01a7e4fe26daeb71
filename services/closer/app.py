"""The closer service: cases from 立案 to 结案, staff accounts, SLAs, the queue and the console.

`build()` wires the parts; each group of routes lives in its own module and is included here
(api, admin, console; an ops overview page can be added the same way).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, REPORTS_FEEDBACK, REPORTS_ROUTED
from schemas.events import CaseTransitioned
from schemas.reference import load_jurisdiction
from services.closer import admin, api, overview, sla
from services.closer.config import CloserConfig, get_config
from services.closer.console import routes as console
from services.closer.context import Closer
from services.closer.feedback import FeedbackHandler
from services.closer.intake import CaseIntake
from services.closer.lifecycle import Lifecycle
from services.closer.models import PLUMBING, Base
from services.closer.scheduler import Scheduler
from services.closer.stream import ChangeFeed

SERVICE = "closer"


def build(settings: Settings | None = None, config: CloserConfig | None = None) -> FastAPI:
    """Create the closer's app, its consumers and its scheduler."""
    settings = settings or get_settings()
    config = config or get_config()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    calendar = sla.WorkCalendar(config.work_hours, config.work_timezone)
    lifecycle = Lifecycle(jurisdiction, calendar, config.confirm_window_hours)
    feed = ChangeFeed()
    ctx = Closer(runtime, settings, config, jurisdiction, lifecycle, feed, settings.signing_key())

    intake = CaseIntake(jurisdiction, lifecycle)
    feedback = FeedbackHandler(lifecycle)
    consumer = runtime.consumer(
        "closer",
        [REPORTS_ROUTED, REPORTS_FEEDBACK],
        {"report.routed": intake.on_routed, "report.feedback": feedback.on_feedback},
        replays={"report.routed": intake.replay},
    )
    consumer.after_commit = ctx.changed  # new cases show in the live queue at once
    runtime.document_publication(CASES_EVENTS, CaseTransitioned, "Case lifecycle events, keyed by case id.")

    scheduler = Scheduler(
        runtime.db, lifecycle, config.scheduler_interval_seconds, config.gauge_interval_seconds, feed.notify
    )
    runtime.background.append(scheduler.run)

    async def bind_feed() -> None:
        feed.bind(asyncio.get_running_loop())

    app = create_app(
        runtime, "GridLoop closer", "Cases, staff, SLAs, the queue and consoles.", on_startup=bind_feed
    )
    app.state.closer = ctx
    app.state.scheduler = scheduler
    app.state.intake = intake
    app.state.feedback = feedback
    app.state.jurisdiction = jurisdiction
    app.state.secret = ctx.secret
    app.include_router(api.router)
    app.include_router(admin.router)
    app.include_router(console.router)
    app.include_router(overview.router)
    console.mount_static(app)
    return app
