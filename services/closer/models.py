"""The closer's tables: cases, their reports, timeline, holds, escalations, photos, staff accounts,
the calendar's imported years, the duty roster and topics (议题)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Column, DateTime, Index, Integer, LargeBinary, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from gridloop.plumbing import define_plumbing


class Base(SQLModel, registry=registry()):
    """The closer's tables: a MetaData of its own, so its migrations see only these."""


PLUMBING = define_plumbing(Base.metadata)


def _ts(nullable: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


STATS_COLUMNS = (
    "case_id",
    "grid_id",
    "category",
    "status",
    "report_count",
    "ack_due",
    "acknowledged_at",
    "resolve_due",
    "resolved_at",
    "closed_at",
    "returned_at",
    "reopen_count",
    "rating",
    "extensions_granted",
    "common_issue",
    "nudges",
    "rider_confirmed",
)
"""The case columns the assessment figures read (services/closer/stats.py), kept in ix_case_stats."""


class Case(Base, table=True):
    """One issue at one place, worked by one station from 立案 to 结案."""

    __tablename__ = "case"
    __table_args__ = (
        # The queue filters by station, then "open" (is_active) or one state, optionally a category,
        # and orders by (due_at, case_id), which is also the cursor: each filter has its index.
        Index("ix_case_queue", "station_id", "status", "due_at", "case_id"),
        Index("ix_case_active_queue", "station_id", "is_active", "due_at", "case_id"),
        Index("ix_case_active_category", "station_id", "category", "is_active", "due_at", "case_id"),
        Index("ix_case_status_category", "station_id", "category", "status", "due_at", "case_id"),
        # supervisors see every station
        Index("ix_case_all_active", "is_active", "due_at", "case_id"),
        Index("ix_case_all_status", "status", "due_at", "case_id"),
        # the scheduler's two questions: what must escalate, what must close
        Index("ix_case_escalate_at", "escalate_at"),
        Index("ix_case_confirm_due", "status", "confirm_due"),
        # CSV export by date range
        Index("ix_case_submitted", "submitted_at"),
        # the duty queue (值班): a station's, a staff account's
        Index("ix_case_duty_station", "duty_station_id", "is_active", "due_at", "case_id"),
        Index("ix_case_duty_username", "duty_username", "is_active", "due_at", "case_id"),
        # issue 17 (stats): the assessment figures read a period by submitted_at from this index alone
        # on PostgreSQL (an index-only scan: every column they group or count is included)
        Index("ix_case_stats", "submitted_at", "station_id", postgresql_include=list(STATS_COLUMNS)),
    )

    case_id: str = Field(primary_key=True, max_length=40)
    station_id: str = Field(max_length=40)
    category: str = Field(max_length=40, index=True)
    status: str = Field(max_length=20)
    is_active: bool = Field(
        default=True, description="The SLA clock runs: new, acknowledged, dispatched, returned."
    )
    priority: str = Field(default="normal", max_length=10)
    triage: bool = False
    version: int = 1
    grid_id: str | None = Field(default=None, max_length=40)
    street_id: str | None = Field(default=None, max_length=40)
    place_id: str | None = Field(default=None, max_length=40)
    place_name: str | None = Field(default=None, max_length=120)
    lat: float | None = None
    lon: float | None = None
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    danger_now: bool = False
    route_reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    submitted_at: datetime = Field(sa_column=_ts())
    opened_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    # SLA: budgets in hours on the case's clock (fixed when opened or when the priority changes), deadlines
    clock: str = Field(
        default="working",
        max_length=10,
        description="The SLA clock: working (working hours on working days) or calendar (around the clock).",
    )
    ack_hours: float = 0.0
    resolve_hours: float = 0.0
    extension_hours: float = 0.0
    ack_due: datetime | None = Field(default=None, sa_column=_ts(True))
    resolve_due: datetime | None = Field(default=None, sa_column=_ts(True))
    ack_warn: datetime | None = Field(default=None, sa_column=_ts(True))
    resolve_warn: datetime | None = Field(default=None, sa_column=_ts(True))
    due_at: datetime | None = Field(default=None, sa_column=_ts(True))
    warn_at: datetime | None = Field(default=None, sa_column=_ts(True))
    escalate_at: datetime | None = Field(default=None, sa_column=_ts(True))
    ack_escalated_due: datetime | None = Field(default=None, sa_column=_ts(True))
    resolve_escalated_due: datetime | None = Field(default=None, sa_column=_ts(True))
    supervised: bool = Field(default=False, description="In the centre's supervision list (督办).")
    confirm_due: datetime | None = Field(default=None, sa_column=_ts(True))
    # milestones
    acknowledged_at: datetime | None = Field(default=None, sa_column=_ts(True))
    dispatched_at: datetime | None = Field(default=None, sa_column=_ts(True))
    resolved_at: datetime | None = Field(default=None, sa_column=_ts(True))
    closed_at: datetime | None = Field(default=None, sa_column=_ts(True))
    returned_at: datetime | None = Field(default=None, sa_column=_ts(True))
    rejected_at: datetime | None = Field(default=None, sa_column=_ts(True))
    reopened_at: datetime | None = Field(default=None, sa_column=_ts(True))
    escalated_at: datetime | None = Field(default=None, sa_column=_ts(True))
    held_at: datetime | None = Field(default=None, sa_column=_ts(True))
    # who and why
    assignee: str | None = Field(default=None, max_length=60)
    moves: int = Field(default=0, description="Returns and transfers so far (no ping-pong).")
    returned_from: str | None = Field(default=None, max_length=20)
    return_reason: str | None = Field(default=None, max_length=40)
    held_from: str | None = Field(default=None, max_length=20)
    reject_reason: str | None = Field(default=None, max_length=40)
    extensions_granted: int = 0
    extension_pending_hours: float | None = None
    reopen_count: int = 0
    rating: int | None = None
    after_photo_ids: str = Field(default="", max_length=400, description="Comma-separated photo ids.")
    distinct_riders: int = 1
    report_count: int = 1
    common_issue: bool = False
    # out of hours (值班): who on duty was given the case (services/closer/duty.py), kept as its record
    duty_station_id: str | None = Field(
        default=None, max_length=40, description="The station on duty it went to out of hours."
    )
    duty_username: str | None = Field(
        default=None, max_length=60, description="The staff account on duty it went to out of hours."
    )
    # the riders' 催办 (services/closer/conversation.py): each one also puts the case on supervision
    nudges: int = Field(default=0, description="Riders' nudges (催办) so far.")
    nudged_at: datetime | None = Field(default=None, sa_column=_ts(True))
    # issue 17 (stats): closed by a rider's "fixed" (confirm), not automatically: a fix confirmed
    rider_confirmed: bool = Field(default=False, description="Closed on a rider's confirmation.")


class CaseReport(Base, table=True):
    """A report in a case, and the event that told the reporter so (re-sent on a re-drive)."""

    __tablename__ = "case_report"
    __table_args__ = (
        # issue 17 (stats): a period's reports by platform (and the overview's last day of reports)
        Index("ix_case_report_stats", "submitted_at", "platform", postgresql_include=["case_id", "fixed"]),
    )

    report_id: str = Field(primary_key=True, max_length=40)
    case_id: str = Field(foreign_key="case.case_id", index=True, max_length=40)
    rider_ref: str | None = Field(default=None, max_length=80)
    submitted_at: datetime = Field(sa_column=_ts())
    event_id: str = Field(max_length=64)
    envelope: str = Field(sa_column=Column(Text, nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    photo_ids: str = Field(default="", max_length=400, description="Comma-separated reporter photo ids.")
    fixed: bool | None = Field(default=None, description="The rider's answer: fixed or not.")
    rating: int | None = None
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    feedback_at: datetime | None = Field(default=None, sa_column=_ts(True))
    # issue 17 (stats): the platform tallies (services/closer/stats.py)
    platform: str | None = Field(default=None, max_length=40, description="The rider's platform, if given.")


class TimelineEntry(Base, table=True):
    """One step in a case's history; its id orders the live queue stream."""

    __tablename__ = "timeline"
    __table_args__ = (
        Index("ix_timeline_station", "station_id", "id"),
        Index("ix_timeline_prev_station", "prev_station_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(foreign_key="case.case_id", index=True, max_length=40)
    at: datetime = Field(sa_column=_ts())
    action: str = Field(max_length=30)
    status: str = Field(max_length=20)
    actor: str = Field(default="system", max_length=60)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    station_id: str | None = Field(default=None, max_length=40, description="The case's station after it.")
    prev_station_id: str | None = Field(
        default=None, max_length=40, description="Set when the station changed."
    )
    reason: str | None = Field(default=None, max_length=40)
    version: int | None = None


class CaseMessage(Base, table=True):
    """One entry of a case's conversation: a staff note (internal), a public update, a question to the
    riders, a rider's reply, a rider's nudge (services/closer/conversation.py)."""

    __tablename__ = "case_message"
    __table_args__ = (Index("ix_case_message_case", "case_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(foreign_key="case.case_id", max_length=40)
    kind: str = Field(max_length=10, description="note, public, question, reply or nudge.")
    text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    actor: str = Field(max_length=60, description="The staff account, or 'rider'.")
    at: datetime = Field(sa_column=_ts())
    report_id: str | None = Field(
        default=None, max_length=40, description="The rider's report (reply, nudge)."
    )
    question_id: int | None = Field(default=None, description="The question a reply answers.")
    photo_ids: str = Field(default="", max_length=400, description="A reply's photo ids (the reporter's).")


class CaseHold(Base, table=True):
    """A hold (挂账): the SLA clock stands still from start to end."""

    __tablename__ = "case_hold"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(foreign_key="case.case_id", index=True, max_length=40)
    start: datetime = Field(sa_column=_ts())
    end: datetime | None = Field(default=None, sa_column=_ts(True))


class Escalation(Base, table=True):
    """A deadline missed and escalated: at most one row per case, deadline and due time."""

    __tablename__ = "escalation"
    __table_args__ = (UniqueConstraint("case_id", "deadline", "due_at", name="uq_escalation_once"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(foreign_key="case.case_id", max_length=40)
    deadline: str = Field(max_length=10)
    due_at: datetime = Field(sa_column=_ts())
    at: datetime = Field(sa_column=_ts())
    station_id: str = Field(max_length=40)
    late: bool = Field(default=False, description="Noticed at a late milestone, not by the scheduler.")


class CasePhoto(Base, table=True):
    """An after-photo (re-encoded JPEG without metadata), served publicly; its bytes are `CasePhotoData`."""

    __tablename__ = "case_photo"

    photo_id: str = Field(primary_key=True, max_length=40)
    case_id: str = Field(foreign_key="case.case_id", index=True, max_length=40)
    kind: str = Field(default="after", max_length=10)
    width: int
    height: int
    size: int
    uploaded_by: str = Field(max_length=60)
    created_at: datetime = Field(sa_column=_ts())


class CasePhotoData(Base, table=True):
    """The bytes of an after-photo, in the database every replica reads (written with the case change)."""

    __tablename__ = "case_photo_data"

    photo_id: str = Field(primary_key=True, foreign_key="case_photo.photo_id", max_length=40)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Staff(Base, table=True):
    """A staff account: grid staff, a centre supervisor, or an admin."""

    __tablename__ = "staff"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, max_length=60)
    display_name: str = Field(default="", max_length=80)
    password_hash: str = Field(max_length=200)
    role: str = Field(max_length=20)
    stations: str = Field(default="", max_length=400, description="Comma-separated station ids.")
    active: bool = True
    token_version: int = Field(
        default=0, description="Raised by disable, password change and logout: older tokens are revoked."
    )
    created_at: datetime = Field(sa_column=_ts())
    streets: str = Field(
        default="",
        max_length=400,
        description="Comma-separated street ids (issue 17); empty: the streets of its stations.",
    )

    @property
    def station_ids(self) -> list[str]:
        """The stations this account works for."""
        return [s for s in self.stations.split(",") if s]

    @property
    def street_ids(self) -> list[str]:
        """The streets this account was given explicitly (gridloop.scope.account_streets decides)."""
        return [s for s in self.streets.split(",") if s]


class LoginThrottle(Base, table=True):
    """Failed sign-ins per key (`user:<name>` or `addr:<address>`) and when the next try may come.

    Written only by `services.closer.throttle`'s atomic statements (never read-modify-write)."""

    __tablename__ = "login_throttle"

    key: str = Field(primary_key=True, max_length=120)
    failures: int = 0
    pending: int = Field(default=0, description="Sign-ins under way (their passwords being checked).")
    last_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    next_at: datetime = Field(sa_column=_ts())


class CalendarYearRow(Base, table=True):
    """An official year imported without a release (`gridloop calendar import`, the admin API).

    It wins over the shipped ``data/calendar/<year>.json``; every replica reads this table, so an
    import reaches them all (services/closer/calendarstore.py)."""

    __tablename__ = "calendar_year"

    year: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    document: str = Field(
        sa_column=Column(Text, nullable=False), description="The year's JSON (schemas/calendar.py)."
    )
    origin: str = Field(max_length=200, description="The file it came from, or the admin API.")
    imported_by: str = Field(max_length=60)
    imported_at: datetime = Field(sa_column=_ts())


class DutyShift(Base, table=True):
    """One shift of a street's duty roster (值班): a station or a staff account, from start to end.

    Written by services/closer/dutystore.py (console, API, `gridloop duty import`); read by the
    lifecycle when a calendar-time case is new or escalated out of hours."""

    __tablename__ = "duty_shift"
    __table_args__ = (Index("ix_duty_shift_street_end", "street_id", "end_at"),)

    id: int | None = Field(default=None, primary_key=True)
    street_id: str = Field(max_length=40)
    start_at: datetime = Field(sa_column=_ts())
    end_at: datetime = Field(sa_column=_ts())
    station_id: str | None = Field(default=None, max_length=40)
    username: str | None = Field(default=None, max_length=60)
    created_by: str = Field(max_length=60)
    created_at: datetime = Field(sa_column=_ts())


# ---- topics (议题): area-level common issues taken to a meeting (services/closer/topics.py) -------


class Topic(Base, table=True):
    """An area-level common issue: cases of one street linked, assigned to a body, met on, closed."""

    __tablename__ = "topic"
    __table_args__ = (Index("ix_topic_street_status", "street_id", "status", "updated_at"),)

    topic_id: str = Field(primary_key=True, max_length=40)
    street_id: str = Field(max_length=40)
    category: str | None = Field(default=None, max_length=40)
    title: str = Field(max_length=500)
    body: str = Field(
        max_length=500, description="Who takes it up: 街区治理委员会, a department, a committee."
    )
    status: str = Field(default="open", max_length=10, description="open or closed.")
    version: int = 1
    suggestion: str | None = Field(default=None, max_length=40, description="The suggestion's key, if any.")
    lat: float | None = None
    lon: float | None = None
    created_by: str = Field(max_length=60)
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    outcome: str | None = Field(default=None, max_length=500)
    resolves: bool = False
    closed_by: str | None = Field(default=None, max_length=60)
    closed_at: datetime | None = Field(default=None, sa_column=_ts(True))


class TopicCase(Base, table=True):
    """A case linked to a topic; a case is in one topic at most (never suggested again)."""

    __tablename__ = "topic_case"
    __table_args__ = (Index("ix_topic_case_topic", "topic_id"),)

    case_id: str = Field(primary_key=True, max_length=40, foreign_key="case.case_id")
    topic_id: str = Field(max_length=40, foreign_key="topic.topic_id")
    linked_by: str = Field(max_length=60)
    linked_at: datetime = Field(sa_column=_ts())


class TopicMeeting(Base, table=True):
    """A topic's meeting (专题会议): when, who took part (text), the decision, the follow-up."""

    __tablename__ = "topic_meeting"
    __table_args__ = (Index("ix_topic_meeting_topic", "topic_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    topic_id: str = Field(max_length=40, foreign_key="topic.topic_id")
    held_on: date
    participants: str = Field(sa_column=Column(Text, nullable=False))
    decision: str = Field(max_length=500)
    follow_up_owner: str | None = Field(default=None, max_length=120)
    follow_up_due: date | None = None
    recorded_by: str = Field(max_length=60)
    recorded_at: datetime = Field(sa_column=_ts())


# --- issue 17: riders recognised ----------------------------------------------------------------


class CaseThanks(Base, table=True):
    """Staff's thank-you to a case's riders (致谢): at most one per case (the key), announced as
    `case.riders_thanked` (services/closer/thanks.py)."""

    __tablename__ = "case_thanks"

    case_id: str = Field(primary_key=True, foreign_key="case.case_id", max_length=40)
    preset: str = Field(max_length=20, description="The preset message's key (schemas/thanks.py).")
    text: str = Field(default="", max_length=200, description="Words staff added, plain text.")
    actor: str = Field(max_length=60, description="The staff account that sent it.")
    at: datetime = Field(sa_column=_ts())
