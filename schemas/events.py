"""Event payloads (the CloudEvents `data`) shared by all services, with their registry and upcasters.

A breaking change to a payload makes a new version (`...v2`) and an upcaster from the old one, so a
consumer always works with the newest model whatever version sits on the topic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.cases import CaseStatus, ClockMode, Priority
from schemas.envelope import CloudEvent, new_event_id
from schemas.thanks import MAX_THANKS_TEXT

Channel = Literal["scan", "manual", "open311"]
Decision = Literal["open", "merge", "triage"]


class EventData(BaseModel):
    """Base of every payload: unknown fields are kept (forward compatible), none are required extra."""

    model_config = ConfigDict(extra="allow")


class Location(BaseModel):
    """A WGS84 point."""

    lat: float = Field(ge=-90, le=90, description="Latitude, degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude, degrees.")


class ReportSubmitted(EventData):
    """A rider's report was accepted by the reporter (`reports.submitted`, key: grid id)."""

    report_id: str = Field(description="The report's id (also the tracking id).")
    channel: Channel = Field(description="How it came in: a scanned code, manual entry, Open311.")
    category: str = Field(description="Category id from the reference data (may be unknown).")
    code: str | None = Field(None, description="The report code scanned or typed, if any.")
    place_id: str | None = Field(None, description="The place the code belongs to, if any.")
    place_name: str | None = Field(None, description="The place's name, for the case title.")
    grid_id: str | None = Field(None, description="The place's grid, when known from the code.")
    location: Location | None = Field(None, description="Where the hazard is, if known.")
    description: str = Field("", max_length=500, description="The rider's words (plain text).")
    danger_now: bool = Field(False, description="The rider flagged an immediate danger.")
    photo_ids: list[str] = Field(default_factory=list, description="Stored photo ids.")
    rider_ref: str | None = Field(
        None, description="A pseudonymous, stable rider reference (hash), for counting distinct riders."
    )
    platform: str | None = Field(None, description="Rider's platform (饿了么, 美团, …), optional.")
    submitted_at: datetime = Field(description="When the reporter accepted it; the SLA clock starts here.")
    plus_one_case_id: str | None = Field(
        None, description="The rider chose '+1' on this open case instead of a new report."
    )


class ReportRouted(EventData):
    """The router's decision for one report (`reports.routed`, key: case id)."""

    report_id: str
    case_id: str = Field(description="The case the report belongs to (new, merged into, or triage).")
    decision: Decision = Field(description="open a new case, merge into an open case, or triage.")
    category: str
    station_id: str = Field(description="The station that gets the case (the centre for triage).")
    grid_id: str | None = None
    street_id: str | None = None
    location: Location | None = None
    place_id: str | None = None
    place_name: str | None = None
    description: str = ""
    danger_now: bool = False
    photo_ids: list[str] = Field(default_factory=list)
    rider_ref: str | None = None
    priority: Priority = "normal"
    submitted_at: datetime
    reason: str = Field("", description="Why, in words a supervisor understands.")
    rule_id: str | None = Field(None, description="The routing rule applied, if any.")
    distinct_riders: int = Field(1, description="Distinct riders on the case after this report.")
    common_issue: bool = Field(False, description="Three or more distinct riders within 24 h.")
    # issue 17 (stats): the platform tallies count reports by the rider's platform
    platform: str | None = Field(None, description="The rider's platform (饿了么, 美团, …), if given.")


class CaseOpened(EventData):
    """The closer opened a case for a report (`cases.events`, key: case id)."""

    case_id: str
    report_id: str = Field(description="The report that opened the case.")
    station_id: str
    category: str
    status: CaseStatus = Field(CaseStatus.NEW, description="The case state after the event.")
    priority: Priority = "normal"
    triage: bool = Field(False, description="In the centre's triage queue (not routable).")
    version: int = Field(1, description="The case's version after the event.")
    opened_at: datetime
    ack_due: datetime | None = None
    resolve_due: datetime | None = None
    clock: ClockMode = Field(
        "working",
        description="The SLA clock: working hours, or calendar time (around the clock, 24 小时处置).",
    )
    street_id: str | None = Field(None, description="The case's street (its centre is the supervisor).")
    grid_id: str | None = Field(None, description="The case's grid, when known.")
    place_name: str | None = Field(
        None, description="The place's registered name (from the report code, never the rider's words)."
    )


class CaseReportMerged(EventData):
    """A further report joined an open case (`cases.events`)."""

    case_id: str
    report_id: str
    station_id: str
    status: CaseStatus
    distinct_riders: int = 1
    common_issue: bool = False
    version: int = 1
    clock: ClockMode = Field(
        "working",
        description="The SLA clock: working hours, or calendar time (around the clock, 24 小时处置).",
    )


class CaseTransitioned(EventData):
    """A case changed state (acknowledged, dispatched, resolved, closed, …) (`cases.events`)."""

    case_id: str
    action: str = Field(description="The action taken, e.g. acknowledge.")
    status: CaseStatus = Field(description="The case state after the event.")
    station_id: str
    version: int
    at: datetime
    note: str | None = None
    report_ids: list[str] = Field(default_factory=list, description="Every report in the case.")
    after_photo_ids: list[str] = Field(
        default_factory=list,
        description="After-photos, public at GRIDLOOP_CLOSER_PUBLIC_URL + /photos/{photo_id}.jpg.",
    )
    reason: str | None = Field(
        None, description="Reason code: of a return, a rejection, or the deadline of an escalation."
    )
    assignee: str | None = Field(None, description="Who handles it (dispatch).")
    from_station: str | None = Field(None, description="The station before a transfer, triage or ruling.")
    deadline: Literal["ack", "resolve"] | None = Field(None, description="The deadline escalated.")
    ack_due: datetime | None = Field(None, description="Sign-for deadline after the event.")
    resolve_due: datetime | None = Field(None, description="Resolve deadline after the event.")
    extension_hours: float | None = Field(None, description="Working hours asked for or granted.")
    clock: ClockMode = Field(
        "working",
        description="The SLA clock: working hours, or calendar time (around the clock, 24 小时处置).",
    )
    duty_station_id: str | None = Field(
        None, description="case.on_duty: the station on duty (值班) the case went to out of hours."
    )
    duty_username: str | None = Field(
        None, description="case.on_duty: the staff account on duty the case went to out of hours."
    )


class ReportFeedback(EventData):
    """The rider's answer on a resolved case (`reports.feedback`, key: case id)."""

    report_id: str
    case_id: str
    fixed: bool
    rating: int | None = Field(None, ge=1, le=5)
    comment: str = Field("", max_length=500)
    at: datetime


MAX_PUBLIC_TEXT = 500
"""Longest public update, question or rider reply: a rider reads it on a phone."""
MAX_NOTE_TEXT = 2000
"""Longest internal staff note."""


class CaseCommented(EventData):
    """A staff member wrote an internal note on a case (`cases.events`).

    The note's words never leave the closer: this event says only that a note was added, by whom and
    when, so no consumer of `cases.events` (the reporter, which faces riders, among them) holds them."""

    case_id: str
    station_id: str = Field(description="The case's station.")
    version: int = Field(description="The case's version after the note.")
    at: datetime
    actor: str = Field(description="The staff account that wrote the note.")
    message_id: int = Field(description="The note's id in the closer's conversation of the case.")


class CaseUpdatedPublic(EventData):
    """Staff published an update on a case; every rider of the case sees it (`cases.events`)."""

    case_id: str
    station_id: str
    version: int = Field(description="The case's version after the update.")
    at: datetime
    message_id: int = Field(description="The update's id in the closer's conversation of the case.")
    text: str = Field(max_length=MAX_PUBLIC_TEXT, description="The update, plain text (escaped on display).")
    report_ids: list[str] = Field(default_factory=list, description="Every report in the case.")


class CaseQuestionAsked(EventData):
    """Staff asked the case's riders a question ("ask the rider"); it shows on their tracking pages
    and they answer with `case.rider_replied` (`cases.events`)."""

    case_id: str
    station_id: str
    version: int = Field(description="The case's version after the question.")
    at: datetime
    message_id: int = Field(description="The question's id; a reply names it as `question_id`.")
    text: str = Field(max_length=MAX_PUBLIC_TEXT, description="The question, plain text.")
    report_ids: list[str] = Field(default_factory=list, description="Every report in the case.")


class CaseRiderReplied(EventData):
    """A rider added words or a photo to their report, usually answering a question.

    The reporter publishes it on `reports.feedback` (key: case id) with the words and photo ids; the
    closer applies it and announces it on `cases.events` without the rider's words or photos (only
    its ids and the case's station and version), so notifications carry no rider data."""

    report_id: str
    case_id: str
    reply_id: str = Field(description="The reply's id (the reporter's).")
    question_id: int | None = Field(None, description="The question answered, if any (its message_id).")
    text: str = Field("", max_length=MAX_PUBLIC_TEXT, description="The rider's words (plain text).")
    photo_ids: list[str] = Field(
        default_factory=list, description="Reply photos, served by the reporter at /api/v1/photos/{id}."
    )
    at: datetime
    station_id: str | None = Field(None, description="On `cases.events`: the case's station.")
    version: int | None = Field(None, description="On `cases.events`: the case's version after it.")


class CaseNudged(EventData):
    """A rider's 催办 (hurry-up), at most once per 24 hours per report.

    The reporter publishes it on `reports.feedback` (key: case id); the closer flags the case on the
    supervision list and announces it on `cases.events` with the case's station, category and
    priority (what notification rules match on)."""

    report_id: str
    case_id: str
    at: datetime
    station_id: str | None = Field(None, description="On `cases.events`: the case's station.")
    category: str | None = Field(None, description="On `cases.events`: the case's category.")
    priority: Priority | None = Field(None, description="On `cases.events`: the case's priority.")
    status: CaseStatus | None = Field(None, description="On `cases.events`: the case's state.")
    version: int | None = Field(None, description="On `cases.events`: the case's version after it.")
    nudges: int | None = Field(None, description="On `cases.events`: the case's nudges so far.")


class CaseRidersThanked(EventData):
    """Staff thanked the riders of a case (致谢), at most once per case; every rider of the case sees
    it on their own tracking page (`cases.events`). No rider data: the reports are named by id."""

    case_id: str
    station_id: str
    version: int = Field(description="The case's version after the thank-you.")
    at: datetime
    preset: str = Field(max_length=20, description="The preset message's key (schemas/thanks.py).")
    text: str = Field("", max_length=MAX_THANKS_TEXT, description="Words staff added, plain text.")
    report_ids: list[str] = Field(default_factory=list, description="Every report in the case.")


class StaffTokensRevoked(EventData):
    """A staff account's earlier tokens stop working (`staff.events`, key: username): disabled,
    password changed or signed out. Every service that takes staff tokens keeps the newest state."""

    username: str
    token_version: int = Field(ge=0, description="Tokens with a lower `ver` claim are refused.")
    active: bool = Field(description="False once the account is disabled: all its tokens are refused.")
    at: datetime


class DeadLetter(EventData):
    """A message a consumer could not parse or apply (`deadletter`, key: the original key)."""

    consumer: str = Field(description="The consumer group that gave up.")
    topic: str
    partition: int
    offset: int
    key: str | None = None
    error: str
    attempts: int
    original: str = Field(description="The original message value, as text.")


# ---- topics (议题): area-level common issues taken to a meeting (`topics.events`, key: topic id) ----

MAX_TOPIC_TEXT = 500
"""Longest topic title, body name, decision or outcome: shown to riders on a phone."""


class TopicOpened(EventData):
    """A supervisor opened a topic (议题) linking cases of one street, from a suggestion or by hand."""

    topic_id: str
    street_id: str = Field(description="The street whose centre owns the topic (its cases' street).")
    centre_station_id: str = Field(description="The street's centre station (what notification rules match).")
    category: str | None = Field(None, description="The cases' category, when they share one.")
    title: str = Field(max_length=MAX_TOPIC_TEXT)
    body: str = Field(
        max_length=MAX_TOPIC_TEXT, description="Who takes it up: 街区治理委员会, a department, a committee."
    )
    case_ids: list[str] = Field(description="Every linked case, oldest first.")
    suggestion: str | None = Field(None, description="The suggestion's key it came from, if any.")
    version: int = Field(description="The topic's version (1).")
    at: datetime


class TopicCasesLinked(EventData):
    """Cases were added to or removed from an open topic."""

    topic_id: str
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    case_ids: list[str] = Field(description="Every linked case after the change.")
    version: int
    at: datetime


class TopicMeetingRecorded(EventData):
    """The topic's meeting (专题会议) was recorded. The participants and the follow-up owner stay in
    the closer (names of people); riders see the date, the decision and the follow-up deadline."""

    topic_id: str
    meeting_id: int
    held_on: date
    decision: str = Field(max_length=MAX_TOPIC_TEXT)
    follow_up_due: date | None = None
    case_ids: list[str]
    version: int
    at: datetime


class TopicClosed(EventData):
    """A topic was closed with its outcome; each linked case got the outcome as a public update (and,
    when `resolves`, was resolved for its riders to confirm) on `cases.events`."""

    topic_id: str
    street_id: str
    centre_station_id: str
    title: str = Field("", max_length=MAX_TOPIC_TEXT, description="The topic's title (for messages).")
    outcome: str = Field(max_length=MAX_TOPIC_TEXT)
    resolves: bool = Field(description="The outcome fixes the cases: the ones that could be were resolved.")
    case_ids: list[str]
    version: int
    at: datetime


# name -> (version, model). Transition events share one model.
_TRANSITIONS = (
    "acknowledged",
    "dispatched",
    "resolved",
    "returned",
    "transferred",
    "extension_requested",
    "extension_decided",
    "on_hold",
    "escalated",
    "reopened",
    "closed",
    "rejected",
    "released",
    "replanned",  # the working calendar changed (an official year imported): new deadlines, same state
    "on_duty",  # a calendar-time case new or escalated out of hours went to duty (值班); the notifier's cue
)
REGISTRY: dict[str, tuple[int, type[EventData]]] = {
    "report.submitted": (1, ReportSubmitted),
    "report.routed": (1, ReportRouted),
    "report.feedback": (1, ReportFeedback),
    "case.opened": (1, CaseOpened),
    "case.report_merged": (1, CaseReportMerged),
    "case.commented": (1, CaseCommented),
    "case.updated_public": (1, CaseUpdatedPublic),
    "case.question_asked": (1, CaseQuestionAsked),
    "case.rider_replied": (1, CaseRiderReplied),
    "case.nudged": (1, CaseNudged),
    "staff.tokens_revoked": (1, StaffTokensRevoked),
    "deadletter.message": (1, DeadLetter),
    **{f"case.{name}": (1, CaseTransitioned) for name in _TRANSITIONS},
    # topics (议题), on `topics.events`
    "topic.opened": (1, TopicOpened),
    "topic.cases_linked": (1, TopicCasesLinked),
    "topic.meeting_recorded": (1, TopicMeetingRecorded),
    "topic.closed": (1, TopicClosed),
    # issue 17, riders recognised
    "case.riders_thanked": (1, CaseRidersThanked),
}

# (name, from_version) -> function turning old data into the next version's data.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


class UnknownEventType(ValueError):
    """The event type is not one this code knows."""


def parse_data(event: CloudEvent) -> EventData:
    """Validate an event's data against its model, upcasting older versions first."""
    name, version = event.name, event.version
    if name not in REGISTRY:
        raise UnknownEventType(event.type)
    current, model = REGISTRY[name]
    data = dict(event.data)
    while version < current:
        data = UPCASTERS[(name, version)](data)
        version += 1
    if version > current:
        raise UnknownEventType(f"{event.type} is newer than this code (v{current})")
    return model.model_validate(data)


def make_event(
    name: str, data: EventData, *, source: str, subject: str, time: datetime, event_id: str | None = None
) -> CloudEvent:
    """Wrap a payload in a CloudEvents envelope of the current version."""
    version, model = REGISTRY[name]
    if not isinstance(data, model):
        raise TypeError(f"{name} takes {model.__name__}, not {type(data).__name__}")
    return CloudEvent(
        id=event_id or new_event_id(),
        source=f"gridloop/{source}",
        type=f"gridloop.{name}.v{version}",
        time=time,
        subject=subject,
        data=data.model_dump(mode="json"),
    )
