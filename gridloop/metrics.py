"""One Prometheus registry per process, holding the contract metrics (docs/architecture.md, "Metrics")."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# the *_created series double every scrape's size and no dashboard of ours reads them
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)

# hour-scale buckets (seconds) for case handling times
_HOURS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 432000.0)
_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# report-to-queue is the pipeline's headline latency: fine buckets around its 1 s objective
_PIPELINE = (0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

reports_received = Counter(
    "gridloop_reports_received",
    "Reports accepted by the reporter.",
    ["category", "channel"],
    registry=REGISTRY,
)
reports_rejected = Counter(
    "gridloop_reports_rejected", "Reports refused at intake, by reason.", ["reason"], registry=REGISTRY
)
outbox_pending = Gauge(
    "gridloop_outbox_pending",
    "Outbox rows not yet acknowledged by the broker.",
    ["service"],
    registry=REGISTRY,
)
route_decisions = Counter("gridloop_route_decisions", "Routing decisions.", ["decision"], registry=REGISTRY)
route_duration = Histogram(
    "gridloop_route_duration_seconds",
    "Time to decide one report's route.",
    buckets=_FAST,
    registry=REGISTRY,
)
# lock waits: sub-millisecond when nobody holds the areas, up to a whole batch's commit when one does
_LOCK_WAIT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
route_lock_wait = Histogram(
    "gridloop_route_lock_wait_seconds",
    "Time a router batch waited for its areas' routing locks (PostgreSQL; not observed on SQLite).",
    buckets=_LOCK_WAIT,
    registry=REGISTRY,
)
route_late_merges = Counter(
    "gridloop_route_late_merges",
    "Reports the router merged into a case the closer had already closed or rejected (a race).",
    registry=REGISTRY,
)
cases_open = Gauge(
    "gridloop_cases_open", "Open cases by station and state.", ["station", "status"], registry=REGISTRY
)
cases_red = Gauge(
    "gridloop_cases_red", "Open cases past a deadline, by station.", ["station"], registry=REGISTRY
)
case_transitions = Counter(
    "gridloop_case_transitions", "Case transitions by action.", ["action"], registry=REGISTRY
)
case_ack_seconds = Histogram(
    "gridloop_case_ack_seconds",
    "Report submitted to signed for.",
    ["category"],
    buckets=_HOURS,
    registry=REGISTRY,
)
case_resolve_seconds = Histogram(
    "gridloop_case_resolve_seconds",
    "Report submitted to resolved.",
    ["category"],
    buckets=_HOURS,
    registry=REGISTRY,
)
sla_breaches = Counter(
    "gridloop_sla_breaches", "Deadlines missed.", ["station", "deadline"], registry=REGISTRY
)
report_to_queue = Histogram(
    "gridloop_report_to_queue_seconds",
    "Report accepted to case visible in the station queue.",
    buckets=_PIPELINE,
    registry=REGISTRY,
)
consumer_lag = Gauge(
    "gridloop_consumer_lag",
    "Messages behind the high watermark.",
    ["group", "topic"],
    registry=REGISTRY,
)
deadletter_total = Counter(
    "gridloop_deadletter", "Messages sent to the dead-letter topic.", ["topic"], registry=REGISTRY
)
events_consumed = Counter(
    "gridloop_events_consumed",
    "Events applied by a consumer (duplicates excluded).",
    ["group", "topic"],
    registry=REGISTRY,
)
events_duplicate = Counter(
    "gridloop_events_duplicate",
    "Redelivered events skipped by a consumer.",
    ["group", "topic"],
    registry=REGISTRY,
)
outbox_published = Counter(
    "gridloop_outbox_published",
    "Outbox rows acknowledged by the broker.",
    ["service", "topic"],
    registry=REGISTRY,
)
http_requests = Counter(
    "gridloop_http_requests",
    "HTTP requests by route template and status class.",
    ["service", "method", "route", "status"],
    registry=REGISTRY,
)
http_duration = Histogram(
    "gridloop_http_request_duration_seconds",
    "HTTP request duration by route template.",
    ["service", "method", "route"],
    buckets=_FAST,
    registry=REGISTRY,
)
leader = Gauge(
    "gridloop_leader",
    "1 while this process leads the role (outbox, redrive, prune) for its service database, else 0.",
    ["service", "role"],
    registry=REGISTRY,
)
pruned_rows = Counter(
    "gridloop_pruned_rows",
    "Rows deleted by the pruner: sent outbox rows past their retention, ledger rows past the dedup window.",
    ["service", "table"],
    registry=REGISTRY,
)
calendar_confirmed_until = Gauge(
    "gridloop_calendar_confirmed_until_timestamp_seconds",
    "End of the last year the closer's working calendar has official or chinese_calendar data for"
    " (later years are estimated); alert before it comes.",
    registry=REGISTRY,
)
events_skipped = Counter(
    "gridloop_events_skipped",
    "Events of a type this code does not know, skipped (not dead-lettered) by a consumer that allows it.",
    ["group", "type"],
    registry=REGISTRY,
)
notifications = Counter(
    "gridloop_notifications",
    "Notification deliveries by channel kind (the Apprise scheme) and outcome: sent, retry (an attempt "
    "failed, another follows), failed (gave up), unrouted (a rule matched but its channel has no URL).",
    ["channel_kind", "outcome"],
    registry=REGISTRY,
)
notification_latency = Histogram(
    "gridloop_notification_latency_seconds",
    "Event time to notification sent.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
    registry=REGISTRY,
)
