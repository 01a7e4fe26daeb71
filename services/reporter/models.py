"""The reporter's tables: places and their report codes, reports, and the riders' view of cases."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, LargeBinary, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from gridloop.plumbing import define_plumbing
from gridloop.revocations import define_staff_token


class Base(SQLModel, registry=registry()):
    """The reporter's tables: a MetaData of its own, so its migrations see only these."""


PLUMBING = define_plumbing(Base.metadata)
STAFF_TOKEN = define_staff_token(Base.metadata)


def _ts(nullable: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


class Place(Base, table=True):
    """A spot where a report code is posted: a gate, a lamppost, a rider station."""

    __tablename__ = "place"

    place_id: str = Field(primary_key=True, max_length=40)
    name_zh: str = Field(max_length=120)
    name_en: str = Field(default="", max_length=120)
    lat: float
    lon: float
    grid_id: str | None = Field(default=None, max_length=40)
    station_id: str | None = Field(default=None, max_length=40)
    active: bool = True
    created_at: datetime = Field(sa_column=_ts())


class ReportCode(Base, table=True):
    """A printed QR/short code that opens the report page of a place."""

    __tablename__ = "report_code"

    code: str = Field(primary_key=True, max_length=16)
    place_id: str = Field(foreign_key="place.place_id", index=True, max_length=40)
    active: bool = True
    created_at: datetime = Field(sa_column=_ts())
    deactivated_at: datetime | None = Field(default=None, sa_column=_ts(True))
    replaced_by: str | None = Field(default=None, max_length=16)
    note: str | None = Field(default=None, max_length=200)


class Report(Base, table=True):
    """A rider's report, stored before the 202 answer; its case arrives later from `cases.events`."""

    __tablename__ = "report"
    __table_args__ = (
        Index("ix_report_unfinished", "case_id", "last_published_at"),
        # the rate limits count recent reports per code, rider and address (ratelimit.py)
        Index("ix_report_code_time", "code", "submitted_at"),
        Index("ix_report_rider_time", "rider_ref", "submitted_at"),
        Index("ix_report_client_time", "client_ref", "submitted_at"),
        Index("ix_report_submitted", "submitted_at"),
    )

    report_id: str = Field(primary_key=True, max_length=40)
    idempotency_key: str | None = Field(default=None, unique=True, max_length=100)
    request_hash: str = Field(max_length=64)
    channel: str = Field(max_length=10)
    category: str = Field(max_length=40)
    code: str | None = Field(default=None, max_length=16)
    place_id: str | None = Field(default=None, max_length=40)
    grid_id: str | None = Field(default=None, max_length=40)
    lat: float | None = None
    lon: float | None = None
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    danger_now: bool = False
    platform: str | None = Field(default=None, max_length=20)
    rider_no_ref: str | None = Field(default=None, max_length=32)
    """A keyed pseudonym of the platform and rider number the rider gave (services.reporter.riders);
    the number itself is never stored, logged, shown or published."""
    rider_ref: str | None = Field(default=None, max_length=80, index=True)
    plus_one_case_id: str | None = Field(default=None, max_length=40)
    submitted_at: datetime = Field(sa_column=_ts())
    submitted_event_id: str = Field(max_length=64)
    last_published_at: datetime = Field(sa_column=_ts())
    case_id: str | None = Field(default=None, max_length=40, index=True)
    status: str = Field(default="received", max_length=20)
    status_at: datetime | None = Field(default=None, sa_column=_ts(True))
    case_version: int = 0
    client_ref: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=200)
    media_url: str | None = Field(default=None, max_length=500)
    tracking_hash: str | None = Field(default=None, max_length=64)
    """A keyed hash of the report's tracking secret (services.reporter.credentials); never the secret."""
    new_rider: bool = False
    """The rider's first report (the new-riders-per-address limit counts these)."""
    nudged_at: datetime | None = Field(default=None, sa_column=_ts(True))
    """The rider's latest 催办 (at most one per 24 hours: services.reporter.nudges)."""


class ReportEvent(Base, table=True):
    """One step of a report's public timeline (no personal data)."""

    __tablename__ = "report_event"

    id: int | None = Field(default=None, primary_key=True)
    report_id: str = Field(foreign_key="report.report_id", index=True, max_length=40)
    status: str = Field(max_length=20)
    action: str = Field(max_length=30)
    at: datetime = Field(sa_column=_ts())
    note: str | None = Field(default=None, max_length=500)


class Photo(Base, table=True):
    """A rider's photo, re-encoded as JPEG without metadata; kept in the database so replicas share it."""

    __tablename__ = "photo"

    photo_id: str = Field(primary_key=True, max_length=40)
    report_id: str = Field(foreign_key="report.report_id", index=True, max_length=40)
    position: int = 0
    content_type: str = Field(default="image/jpeg", max_length=40)
    width: int
    height: int
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_column=_ts())
    reply_id: str | None = Field(default=None, max_length=40, index=True)
    """Set for a photo the rider added later in a reply (not one sent with the report)."""


class CaseView(Base, table=True):
    """The riders' read model of a case, kept from `cases.events` (the closer owns the case)."""

    __tablename__ = "case_view"

    case_id: str = Field(primary_key=True, max_length=40)
    station_id: str = Field(max_length=40)
    category: str = Field(max_length=40)
    status: str = Field(max_length=20, index=True)
    version: int = 0
    place_id: str | None = Field(default=None, max_length=40, index=True)
    opened_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    resolve_due: datetime | None = Field(default=None, sa_column=_ts(True))
    clock: str = Field(default="working", max_length=10)
    """The case's SLA clock: working, or calendar (24 小时处置)."""
    after_photo_ids: str = Field(default="", max_length=500)
    """Comma-separated after-photo ids (served by the closer)."""
    status_note: str | None = Field(default=None, max_length=500)


class CaseMessage(Base, table=True):
    """A public update or a question staff wrote on a case (from `cases.events`); every rider of the
    case sees it. Internal notes never come here: their words never leave the closer."""

    __tablename__ = "case_message"
    __table_args__ = (UniqueConstraint("case_id", "message_id", name="uq_case_message_once"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=40, index=True)
    message_id: int = Field(description="The entry's id in the closer's conversation.")
    kind: str = Field(max_length=10, description="public or question.")
    text: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = Field(sa_column=_ts())


class RiderReply(Base, table=True):
    """A rider's words or photo added to their report later (an answer to a question, a detail)."""

    __tablename__ = "rider_reply"

    reply_id: str = Field(primary_key=True, max_length=40)
    report_id: str = Field(foreign_key="report.report_id", index=True, max_length=40)
    case_id: str = Field(max_length=40)
    question_id: int | None = None
    text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    at: datetime = Field(sa_column=_ts())
    event_id: str = Field(max_length=64)


class Feedback(Base, table=True):
    """A rider's answer on a resolved case: fixed or not, a rating, a comment (once per resolution)."""

    __tablename__ = "feedback"

    id: int | None = Field(default=None, primary_key=True)
    report_id: str = Field(foreign_key="report.report_id", index=True, max_length=40)
    case_id: str = Field(max_length=40)
    case_version: int
    fixed: bool
    rating: int | None = None
    comment: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    at: datetime = Field(sa_column=_ts())
    event_id: str = Field(max_length=64)


class ApiKey(Base, table=True):
    """An Open311 API key issued by an admin; only its digest is stored."""

    __tablename__ = "api_key"

    key_id: str = Field(primary_key=True, max_length=20)
    key_hash: str = Field(unique=True, max_length=64)
    name: str = Field(max_length=100)
    created_by: str = Field(max_length=80)
    created_at: datetime = Field(sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(True))


class PushSubscription(Base, table=True):
    """A browser's Web Push subscription for one report (no account: the report's credential made it)."""

    __tablename__ = "push_subscription"
    __table_args__ = (UniqueConstraint("report_id", "endpoint_hash", name="uq_push_subscription_report"),)

    id: int | None = Field(default=None, primary_key=True)
    report_id: str = Field(foreign_key="report.report_id", index=True, max_length=40)
    endpoint: str = Field(sa_column=Column(Text, nullable=False))
    """The push service's URL for this browser (a capability: whoever has it can push to it)."""
    endpoint_hash: str = Field(max_length=64)
    """SHA-256 of the endpoint: the unique key (an endpoint may be longer than an index allows)."""
    p256dh: str = Field(max_length=100)
    auth: str = Field(max_length=40)
    lang: str = Field(default="zh", max_length=5)
    created_at: datetime = Field(sa_column=_ts())


class PushMessage(Base, table=True):
    """A push to send (the push outbox): written with the event that caused it, sent by one leader."""

    __tablename__ = "push_message"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_push_message_event"),
        Index("ix_push_message_due", "state", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="push_subscription.id", index=True)
    event_id: str = Field(max_length=64)
    kind: str = Field(max_length=30)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    """The JSON the browser receives: title, body, url (no personal data)."""
    state: str = Field(default="pending", max_length=10)
    """pending, sent, or failed (given up)."""
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=_ts())
    created_at: datetime = Field(sa_column=_ts())
    sent_at: datetime | None = Field(default=None, sa_column=_ts(True))
    last_error: str | None = Field(default=None, max_length=200)


# ---- topics (议题) from `topics.events` (services/reporter/topics.py) ----------------------------


class TopicView(Base, table=True):
    """A topic as its cases' riders see it: what, who takes it up, the meeting's decision, the outcome.

    Kept from `topics.events`; never the meeting's participants or the follow-up's owner (the closer
    keeps those)."""

    __tablename__ = "topic_view"

    topic_id: str = Field(primary_key=True, max_length=40)
    title: str = Field(max_length=500)
    body: str = Field(max_length=500)
    status: str = Field(default="open", max_length=10)
    version: int = 0
    held_on: str | None = Field(default=None, max_length=10, description="The meeting's date, ISO.")
    decision: str | None = Field(default=None, max_length=500)
    follow_up_due: str | None = Field(default=None, max_length=10, description="ISO date.")
    outcome: str | None = Field(default=None, max_length=500)
    resolves: bool = False
    updated_at: datetime = Field(sa_column=_ts())


class TopicCaseView(Base, table=True):
    """Which topic a case is in (a case is in one at most)."""

    __tablename__ = "topic_case_view"

    case_id: str = Field(primary_key=True, max_length=40)
    topic_id: str = Field(max_length=40, index=True)


# --- issue 17: riders recognised -----------------------------------------------------------------


class RiderThanks(Base, table=True):
    """Staff's thank-you to the riders of a case (`case.riders_thanked`, at most one per case): each
    rider of the case sees it on their own tracking page and counts it on /my."""

    __tablename__ = "rider_thanks"

    case_id: str = Field(primary_key=True, max_length=40)
    preset: str = Field(max_length=20)
    """The preset message's key (schemas/thanks.py), shown in the rider's language."""
    text: str = Field(default="", max_length=200)
    """Words staff added, plain text."""
    at: datetime = Field(sa_column=_ts())
    event_id: str = Field(max_length=64)
