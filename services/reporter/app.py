"""The reporter service: places and codes, report intake, the riders' pages and view of their cases.

`build()` wires the parts; each group of routes lives in a module of services.reporter.api and is
included here. The riders' JSON posts are answered in front of FastAPI by services.reporter.fastpath.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware

from gridloop.groupcommit import GroupCommit
from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, REPORTS_FEEDBACK, REPORTS_SUBMITTED, STAFF_EVENTS, TOPICS_EVENTS
from schemas.events import ReportFeedback, ReportSubmitted
from schemas.reference import load_jurisdiction
from services.reporter.api import conversation, keys, open311, pages, places, reports
from services.reporter.api import push as push_api
from services.reporter.config import RateLimits, ReporterConfig, get_config
from services.reporter.context import Reporter
from services.reporter.fastpath import JsonReportFastPath
from services.reporter.handlers import handlers
from services.reporter.models import PLUMBING, Base
from services.reporter.push_sender import PushSender
from services.reporter.redrive import redrive_loop
from services.reporter.vapid import vapid_keys

SERVICE = "reporter"


def build(settings: Settings | None = None, config: ReporterConfig | None = None) -> FastAPI:
    """Create the reporter's app, its consumer and its redrive loop."""
    settings = settings or get_settings()
    config = config or get_config()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    secret = config.vapid_private_key.get_secret_value() if config.vapid_private_key else None
    vapid = vapid_keys(secret, config.vapid_public_key, config.vapid_subject, settings.var_dir)
    ctx = Reporter(
        runtime,
        settings,
        config,
        jurisdiction,
        settings.signing_key(),
        RateLimits(),
        GroupCommit(runtime.db),
        vapid,
    )
    sender = PushSender(runtime, vapid, config)
    runtime.consumer(
        "reporter", [CASES_EVENTS, STAFF_EVENTS, TOPICS_EVENTS], handlers(sender.wake), plain_sql=True
    )
    runtime.document_publication(REPORTS_SUBMITTED, ReportSubmitted, "Accepted reports, keyed by grid id.")
    runtime.document_publication(
        REPORTS_FEEDBACK,
        ReportFeedback,
        "Riders' answers, and their replies (case.rider_replied) and nudges (case.nudged), keyed by case id.",
    )
    runtime.background.append(redrive_loop(runtime, settings.redrive_after_seconds, config.redrive_batch))
    runtime.background.append(sender.loop())

    app = create_app(
        runtime,
        "GridLoop reporter",
        "Report codes, rider intake, tracking, Open311.",
        photo_routes={"POST /api/v1/reports": 3, "POST /api/v1/reports/{report_id}/replies": 1},
    )
    app.add_middleware(GZipMiddleware, minimum_size=800)
    # added last, so outermost: the riders' JSON posts skip the layers above (services.reporter.fastpath)
    app.add_middleware(
        JsonReportFastPath,
        service=SERVICE,
        submit=ctx.submit,
        read_json=reports.report_from_json,
        check_key=reports.check_idempotency_key,
        too_large=lambda: reports.too_large(config.max_json_bytes),
        max_bytes=config.max_json_bytes,
        context=ctx.intake_context,
        set_cookie=ctx.set_rider_cookie,
    )
    app.state.reporter = ctx
    app.state.push_sender = sender
    app.state.jurisdiction = jurisdiction
    app.include_router(reports.router)
    app.include_router(conversation.router)
    app.include_router(places.router)
    app.include_router(keys.router)
    app.include_router(pages.router)
    app.include_router(open311.router)
    app.include_router(push_api.router)
    pages.mount_static(app)
    return app
