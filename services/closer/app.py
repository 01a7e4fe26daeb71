"""The closer service: cases from 立案 to 结案, staff accounts, SLAs, the queue and the console.

`build()` wires the parts: the lifecycle, the Kafka handlers, the scheduler, and the routers of
api/ (JSON) and console/ (pages), and runs `staff.refuse_demo_passwords` at start. No routes and
no logic here.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, REPORTS_FEEDBACK, REPORTS_ROUTED, TOPICS_EVENTS
from schemas.events import CaseTransitioned, TopicClosed
from schemas.reference import load_jurisdiction
from services.closer import calendarstore, sla
from services.closer.api import admin, auth, cases, photos
from services.closer.api import calendar as calendar_api
from services.closer.api import duty as duty_api
from services.closer.api import overview as overview_api
from services.closer.api import stats as stats_api
from services.closer.api import topics as topics_api
from services.closer.calendar import Calendar
from services.closer.cli import demo_accounts
from services.closer.config import CloserConfig, calendar_dir, get_config
from services.closer.console import duty as duty_page
from services.closer.console import notifications as notifications_page
from services.closer.console import overview as overview_page
from services.closer.console import routes as console
from services.closer.console import stats as stats_page
from services.closer.console import topics as topics_page
from services.closer.context import Closer
from services.closer.handlers import Handlers
from services.closer.lifecycle import Lifecycle
from services.closer.models import PLUMBING, Base
from services.closer.poller import TimelinePoller
from services.closer.scheduler import Scheduler
from services.closer.staff import refuse_demo_passwords

SERVICE = "closer"


def build(settings: Settings | None = None, config: CloserConfig | None = None) -> FastAPI:
    """Create the closer's app, its consumers and its scheduler."""
    settings = settings or get_settings()
    config = config or get_config()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    folder = calendar_dir(config, settings.jurisdiction_dir)
    # read once: a malformed shipped year stops the closer here (CalendarError names the file)
    shipped = calendarstore.shipped(folder)
    calendar = Calendar(shipped)
    calendars = sla.StreetCalendars(jurisdiction, config.work_timezone).on(calendar)
    lifecycle = Lifecycle(jurisdiction, calendars, config.confirm_window_hours)
    poller = TimelinePoller(runtime.db, config.stream_poll_seconds)
    ctx = Closer(
        runtime, settings, config, jurisdiction, lifecycle, poller, settings.signing_key(), calendar, shipped
    )

    def refresh_calendar() -> None:
        calendarstore.refresh(calendar, shipped, runtime.db, config.work_timezone, lifecycle)

    handlers = Handlers(lifecycle)
    consumer = runtime.consumer(
        "closer",
        [REPORTS_ROUTED, REPORTS_FEEDBACK],
        {
            "report.routed": handlers.on_routed,
            "report.feedback": handlers.on_feedback,
            "case.rider_replied": handlers.on_rider_replied,
            "case.nudged": handlers.on_nudged,
        },
        replays={"report.routed": handlers.replay_routed},
    )
    consumer.after_commit = ctx.changed  # new cases show in the live queue at once
    runtime.document_publication(CASES_EVENTS, CaseTransitioned, "Case lifecycle events, keyed by case id.")
    runtime.document_publication(
        TOPICS_EVENTS,
        TopicClosed,
        "Topics (议题): topic.opened, .cases_linked, .meeting_recorded, .closed; keyed by topic id.",
    )

    scheduler = Scheduler(
        runtime.db,
        lifecycle,
        config.scheduler_interval_seconds,
        config.gauge_interval_seconds,
        poller.notify,
        refresh_calendar,
    )
    runtime.background.append(scheduler.run)

    async def start() -> None:
        demo_names = [account.username for account in demo_accounts(jurisdiction)]
        await asyncio.to_thread(refuse_demo_passwords, runtime.db, settings, demo_names)
        # the imported years (a malformed row stops the start, named); later imports: the scheduler's
        # refresh, which also re-plans (not here: a start-up need not scan every open case)
        await asyncio.to_thread(calendarstore.refresh, calendar, shipped, runtime.db, config.work_timezone)

    app = create_app(
        runtime,
        "GridLoop closer",
        "Cases, staff, SLAs, the queue and consoles.",
        on_startup=start,
        photo_routes={"POST /api/v1/cases/{case_id}/transitions": 1, "POST /console/cases/{case_id}/act": 1},
    )
    app.state.closer = ctx
    app.state.scheduler = scheduler
    app.state.handlers = handlers
    app.state.jurisdiction = jurisdiction
    app.state.secret = ctx.secret
    app.include_router(auth.router)
    app.include_router(cases.router)
    app.include_router(photos.router)
    app.include_router(admin.router)
    app.include_router(calendar_api.router)
    app.include_router(duty_api.router)
    app.include_router(console.router)
    app.include_router(duty_page.router)
    app.include_router(notifications_page.router)
    app.include_router(overview_api.router)
    app.include_router(overview_page.router)
    app.include_router(stats_api.router)
    app.include_router(stats_page.router)
    app.include_router(topics_api.router)
    app.include_router(topics_page.router)
    console.mount_static(app)
    return app
