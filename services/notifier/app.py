"""The notifier service: `cases.events` to people, through Apprise channels, durably.

`build()` wires the parts: the rules (``rules``, validated at start with the jurisdiction), the
consumer (``handlers``: events to delivery rows), the sender loop under leadership (``sender``), and
the API (``api``: test send, deliveries, retry). README.md has the map.
"""

from __future__ import annotations

from fastapi import FastAPI

from gridloop import metrics
from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, STAFF_EVENTS, TOPICS_EVENTS
from schemas.reference import load_jurisdiction
from services.notifier import api, channels
from services.notifier.config import NotifierConfig, get_config
from services.notifier.context import Notifier
from services.notifier.deliveries import Backoff
from services.notifier.handlers import CASE_EVENTS, TOPIC_EVENTS, Handlers
from services.notifier.models import PLUMBING, Base
from services.notifier.rules import load_rules
from services.notifier.sender import Sender

SERVICE = "notifier"


def build(settings: Settings | None = None, config: NotifierConfig | None = None) -> FastAPI:
    """Create the notifier's app, its consumer and its sender."""
    settings = settings or get_settings()
    config = config or get_config()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    # a bad rule stops the start here, named (RulesError)
    rules = load_rules(config.rules_file, jurisdiction)
    channels.check_literal_urls(rules, str(config.rules_file))
    if config.fallback_url is not None and not channels.is_sendable(config.fallback_url):
        shown = channels.masked(config.fallback_url)
        raise ValueError(f"GRIDLOOP_NOTIFY_FALLBACK_URL {shown!r} is not a URL Apprise can send to")

    policy = Backoff(config.max_attempts, config.backoff_seconds, config.backoff_max_seconds)
    sender = Sender(
        runtime.db,
        runtime.leadership("sender"),
        policy,
        config.digest_threshold,
        config.send_interval_seconds,
        config.english,
    )
    handlers = Handlers(rules, jurisdiction, config, settings.closer_public_url, on_new=sender.wake)
    runtime.consumer(
        "notifier",
        [CASES_EVENTS, STAFF_EVENTS, TOPICS_EVENTS],
        {
            **{name: handlers.on_case_event for name in CASE_EVENTS},
            **{name: handlers.on_topic_event for name in TOPIC_EVENTS},
            "staff.tokens_revoked": handlers.on_tokens_revoked,
        },
        # case.nudged and the other conversation events may reach the topic before this code knows them
        skip_unknown=True,
    )
    runtime.background.append(sender.run)
    for kind in sorted(
        {channels.kind_of(url) for url in ("json://", "wecombot://", "dingtalk://", "mailto://")}
    ):
        for outcome in ("sent", "failed"):
            metrics.notifications.labels(kind, outcome)  # the usual series exist from the start, at 0

    ctx = Notifier(runtime, jurisdiction, rules, config, sender, settings.signing_key())
    app = create_app(
        runtime, "GridLoop notifier", "Notifies stations, the centre and duty staff of case events."
    )
    app.state.notifier = ctx
    app.state.jurisdiction = jurisdiction
    app.include_router(api.router)
    return app
