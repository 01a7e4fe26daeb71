"""Topics (议题): area-level common issues a street's centre takes to a meeting, over the database.

A topic links cases of one street (a case is in one topic at most), is assigned to a body (街区治理委员会,
a department, a committee), has its meetings recorded and is closed with an outcome. Every change bumps
the topic's version and queues one event on `topics.events` (key: topic id) through the closer's
outbox, in the caller's transaction. Closing changes the linked cases only through `Lifecycle`
(services/closer/lifecycle.py), so each case gets its own timeline rows and `cases.events`:

- every linked case not closed or rejected gets a public update "议题结论：<outcome>" its riders see;
- with `resolves` (the outcome fixes the issue), each such case in new, acknowledged or dispatched
  (not waiting for triage) is then taken to resolved by the closing supervisor — acknowledge, dispatch
  to the topic's body, resolve with the outcome as note (the recorded outcome stands in for an
  after-photo) — so each rider is asked to confirm the fix, as after any resolve;
- cases returned, on hold or already resolved keep their state (the update only); closed and rejected
  cases are not touched: their riders see the outcome through the topic itself (the reporter keeps
  `topics.events`).

Who: supervisors write; supervisors and admins read; a topic belongs to its street's centre, and a
caller who cannot see that centre (`scope.can_see`) gets 404 for it, as for its cases.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from gridloop.clock import as_utc
from gridloop.errors import ApiError
from gridloop.outbox import add_raw
from gridloop.tokens import Principal
from gridloop.topics import TOPICS_EVENTS
from schemas.cases import CaseStatus
from schemas.events import (
    MAX_PUBLIC_TEXT,
    EventData,
    TopicCasesLinked,
    TopicClosed,
    TopicMeetingRecorded,
    TopicOpened,
    make_event,
)
from schemas.reference import Jurisdiction
from services.closer import scope, suggestions
from services.closer.lifecycle import SERVICE, Lifecycle
from services.closer.models import PLUMBING, Case, Topic, TopicCase, TopicMeeting
from services.closer.transitions import Refused, Request

OUTCOME_PREFIX = "议题结论："
MAX_OUTCOME = MAX_PUBLIC_TEXT - len(OUTCOME_PREFIX)
"""The outcome goes to every case as a public update: prefix and outcome fit one update."""
MAX_CASES = 200
WRITERS = ("supervisor",)
READERS = ("supervisor", "admin")
FINAL = (CaseStatus.CLOSED, CaseStatus.REJECTED)
RESOLVABLE = (CaseStatus.NEW, CaseStatus.ACKNOWLEDGED, CaseStatus.DISPATCHED)
BODIES = ("街区治理委员会", "城运中心", "市容所", "城管中队", "房管办", "共享单车企业联席会")
"""What the console suggests for "assigned to" (free text: any named body is fine)."""


# ---- who may do what ----------------------------------------------------------------------------


def check_reader(who: Principal) -> None:
    """403 unless the caller is the centre's (supervisors) or an admin."""
    if who.role not in READERS:
        raise ApiError(403, "forbidden", "Topics are the street centre's.")


def check_writer(who: Principal) -> None:
    """403 unless the caller is a supervisor."""
    if who.role not in WRITERS:
        raise ApiError(403, "forbidden", "Only the centre's supervisors work on topics.")


def street_visible(who: Principal, j: Jurisdiction, street_id: str) -> bool:
    """A topic of this street is visible when its centre station is (services/closer/scope.py)."""
    street = j.streets.get(street_id)
    return street is not None and scope.can_see(who, j, street.centre_station_id)


def case_street(j: Jurisdiction, case: Case) -> str:
    """The street a case belongs to (its own, else its station's)."""
    if case.street_id:
        return case.street_id
    station = j.stations.get(case.station_id)
    return station.street_id if station else j.default_street_id


# ---- reading --------------------------------------------------------------------------------------


def load(session: Session, who: Principal, j: Jurisdiction, topic_id: str, lock: bool = False) -> Topic:
    """A topic the caller may see; another street's (or none) is 404."""
    q = select(Topic).where(Topic.topic_id == topic_id)
    topic = session.exec(q.with_for_update() if lock else q).first()
    if topic is None or not street_visible(who, j, topic.street_id):
        raise ApiError(404, "not_found", "No such topic.")
    return topic


def linked_ids(session: Session, topic_id: str) -> list[str]:
    """The topic's cases, oldest first."""
    rows = session.exec(
        select(TopicCase.case_id)
        .join(Case, col(Case.case_id) == col(TopicCase.case_id))
        .where(TopicCase.topic_id == topic_id)
        .order_by(col(Case.submitted_at), col(Case.case_id))
    )
    return list(rows)


def case_rows(session: Session, who: Principal, j: Jurisdiction, now: datetime) -> list[suggestions.CaseRow]:
    """The cases a suggestion may hold for the caller: within the longest window, not rejected, in no
    topic, at a station the caller sees (one indexed range on `submitted_at`)."""
    days = max(c.topic.window_days for c in j.categories.values())
    q = (
        sa_select(
            col(Case.case_id),
            col(Case.category),
            col(Case.street_id),
            col(Case.station_id),
            col(Case.grid_id),
            col(Case.lat),
            col(Case.lon),
            col(Case.submitted_at),
        )  # the columns only: a street's fortnight of cases, read on every list
        .where(col(Case.submitted_at) >= now - timedelta(days=days))
        .where(col(Case.status) != CaseStatus.REJECTED)
        .where(~col(Case.case_id).in_(select(TopicCase.case_id)))
    )
    visible = scope.visible_stations(who, j)
    if visible is not None:
        q = q.where(col(Case.station_id).in_(sorted(visible)))
    rows = []
    for case_id, category, street_id, station_id, grid_id, lat, lon, submitted_at in session.execute(q):
        station = j.stations.get(station_id)
        street = street_id or (station.street_id if station else j.default_street_id)
        rows.append(
            suggestions.CaseRow(case_id, category, street, station_id, grid_id, lat, lon, _utc(submitted_at))
        )
    return rows


def suggested(
    session: Session, who: Principal, j: Jurisdiction, now: datetime
) -> list[suggestions.Suggestion]:
    """The caller's suggestions now, computed on demand (no state to keep in step with the cases)."""
    rules = {cid: c.topic for cid, c in j.categories.items()}
    return [
        s
        for s in suggestions.suggest(case_rows(session, who, j, now), rules, now)
        if s.street_id is not None and street_visible(who, j, s.street_id)
    ]


def listing(session: Session, who: Principal, j: Jurisdiction, status: str) -> list[Topic]:
    """The caller's topics in one state, the latest change first."""
    streets = [s for s in j.streets if street_visible(who, j, s)]
    return list(
        session.exec(
            select(Topic)
            .where(Topic.status == status)
            .where(col(Topic.street_id).in_(streets))
            .order_by(col(Topic.updated_at).desc(), col(Topic.topic_id))
            .limit(200)
        )
    )


def meetings(session: Session, topic_id: str) -> list[TopicMeeting]:
    """The topic's meetings, in the order recorded."""
    return list(
        session.exec(
            select(TopicMeeting).where(TopicMeeting.topic_id == topic_id).order_by(col(TopicMeeting.id))
        )
    )


def cases_of(session: Session, topic_id: str) -> list[Case]:
    """The topic's cases, oldest first."""
    return list(
        session.exec(
            select(Case)
            .join(TopicCase, col(Case.case_id) == col(TopicCase.case_id))
            .where(TopicCase.topic_id == topic_id)
            .order_by(col(Case.submitted_at), col(Case.case_id))
        )
    )


# ---- writing --------------------------------------------------------------------------------------


def _utc(at: datetime) -> datetime:
    return as_utc(at)


def _publish(session: Session, topic: Topic, name: str, data: EventData, now: datetime) -> None:
    event = make_event(name, data, source=SERVICE, subject=topic.topic_id, time=now)
    add_raw(session, PLUMBING, TOPICS_EVENTS, topic.topic_id, event.id, event.model_dump_json())


def _bump(topic: Topic, now: datetime) -> None:
    topic.version += 1
    topic.updated_at = now


def _check_version(topic: Topic, version: int) -> None:
    if topic.status != "open":
        raise ApiError(409, "topic_closed", "The topic is closed.", {"version": topic.version})
    if version != topic.version:
        raise ApiError(
            409,
            "stale_version",
            f"The topic changed (version {topic.version}, you sent {version}); reload it.",
            {"version": topic.version, "status": topic.status},
        )


def _text(value: str, field: str, limit: int, required: bool = True) -> str:
    words = value.strip()
    if required and not words:
        raise ApiError(422, "invalid_input", f"{field}: required.", {"field": field})
    if len(words) > limit:
        raise ApiError(422, "invalid_input", f"{field}: at most {limit} characters.", {"field": field})
    return words


def _cases_to_link(
    session: Session, who: Principal, j: Jurisdiction, street_id: str | None, case_ids: Sequence[str]
) -> tuple[str, list[Case]]:
    """The cases named, locked: visible (404), one street (422), in no topic yet (409)."""
    ids = list(dict.fromkeys(c.strip() for c in case_ids if c.strip()))
    if not ids:
        raise ApiError(422, "invalid_input", "case_ids: name at least one case.", {"field": "case_ids"})
    if len(ids) > MAX_CASES:
        raise ApiError(422, "invalid_input", f"case_ids: at most {MAX_CASES}.", {"field": "case_ids"})
    found = {
        c.case_id: c for c in session.exec(select(Case).where(col(Case.case_id).in_(ids)).with_for_update())
    }
    for cid in ids:
        case = found.get(cid)
        if case is None or not scope.can_see(who, j, case.station_id):
            raise ApiError(404, "not_found", f"No such case {cid}.", {"field": "case_ids"})
    streets = {case_street(j, found[cid]) for cid in ids} | ({street_id} if street_id else set())
    if len(streets) != 1:
        raise ApiError(
            422, "invalid_input", "case_ids: a topic's cases are all of one street.", {"field": "case_ids"}
        )
    taken = list(session.exec(select(TopicCase.case_id).where(col(TopicCase.case_id).in_(ids))))
    if taken:
        raise ApiError(
            409,
            "case_in_topic",
            f"Already in a topic: {', '.join(sorted(taken))}.",
            {"case_ids": sorted(taken)},
        )
    return streets.pop(), [found[cid] for cid in ids]


def open_topic(
    session: Session,
    who: Principal,
    j: Jurisdiction,
    *,
    title: str,
    body: str,
    case_ids: Sequence[str],
    suggestion: str | None,
    now: datetime,
) -> Topic:
    """A new topic linking `case_ids` (all of one street, in no topic), and `topic.opened`."""
    check_writer(who)
    title = _text(title, "title", 200)
    body = _text(body, "body", 120)
    street_id, cases = _cases_to_link(session, who, j, None, case_ids)
    if not street_visible(who, j, street_id):
        raise ApiError(404, "not_found", "No such case.", {"field": "case_ids"})
    categories = {c.category for c in cases}
    points = [(c.lat, c.lon) for c in cases if c.lat is not None and c.lon is not None]
    topic = Topic(
        topic_id="T" + uuid.uuid4().hex[:10].upper(),
        street_id=street_id,
        category=categories.pop() if len(categories) == 1 else None,
        title=title,
        body=body,
        suggestion=(suggestion or "").strip()[:40] or None,
        lat=sum(p[0] for p in points) / len(points) if points else None,
        lon=sum(p[1] for p in points) / len(points) if points else None,
        created_by=who.username,
        created_at=now,
        updated_at=now,
    )
    session.add(topic)
    session.flush()  # the topic row before its links (foreign key)
    for case in cases:
        session.add(
            TopicCase(case_id=case.case_id, topic_id=topic.topic_id, linked_by=who.username, linked_at=now)
        )
    session.flush()
    ids = linked_ids(session, topic.topic_id)
    _publish(
        session,
        topic,
        "topic.opened",
        TopicOpened(
            topic_id=topic.topic_id,
            street_id=street_id,
            centre_station_id=j.streets[street_id].centre_station_id,
            category=topic.category,
            title=title,
            body=body,
            case_ids=ids,
            suggestion=topic.suggestion,
            version=topic.version,
            at=now,
        ),
        now,
    )
    return topic


def link(
    session: Session,
    who: Principal,
    j: Jurisdiction,
    topic_id: str,
    *,
    version: int,
    add: Sequence[str],
    remove: Sequence[str],
    now: datetime,
) -> Topic:
    """Add cases to an open topic or take them off (one case stays at least), and `topic.cases_linked`."""
    check_writer(who)
    topic = load(session, who, j, topic_id, lock=True)
    _check_version(topic, version)
    current = linked_ids(session, topic_id)
    gone = [c for c in dict.fromkeys(remove) if c in current]
    strangers = [c for c in remove if c not in current]
    if strangers:
        raise ApiError(
            422, "invalid_input", f"remove: not in the topic: {', '.join(strangers)}.", {"field": "remove"}
        )
    added: list[Case] = []
    if add:
        _street, added = _cases_to_link(session, who, j, topic.street_id, add)
    if not added and not gone:
        raise ApiError(422, "invalid_input", "add or remove at least one case.", {"field": "add"})
    if len(current) - len(gone) + len(added) < 1:
        raise ApiError(422, "invalid_input", "remove: a topic keeps one case at least.", {"field": "remove"})
    for cid in gone:
        row = session.get(TopicCase, cid)
        if row is not None:
            session.delete(row)
    for case in added:
        session.add(TopicCase(case_id=case.case_id, topic_id=topic_id, linked_by=who.username, linked_at=now))
    _bump(topic, now)
    session.add(topic)
    session.flush()
    _publish(
        session,
        topic,
        "topic.cases_linked",
        TopicCasesLinked(
            topic_id=topic_id,
            added=[c.case_id for c in added],
            removed=gone,
            case_ids=linked_ids(session, topic_id),
            version=topic.version,
            at=now,
        ),
        now,
    )
    return topic


def record_meeting(
    session: Session,
    who: Principal,
    j: Jurisdiction,
    topic_id: str,
    *,
    version: int,
    held_on: date,
    participants: str,
    decision: str,
    follow_up_owner: str | None,
    follow_up_due: date | None,
    now: datetime,
) -> TopicMeeting:
    """Record a meeting of an open topic, and `topic.meeting_recorded` (without people's names)."""
    check_writer(who)
    topic = load(session, who, j, topic_id, lock=True)
    _check_version(topic, version)
    meeting = TopicMeeting(
        topic_id=topic_id,
        held_on=held_on,
        participants=_text(participants, "participants", 2000),
        decision=_text(decision, "decision", 500),
        follow_up_owner=_text(follow_up_owner or "", "follow_up_owner", 120, required=False) or None,
        follow_up_due=follow_up_due,
        recorded_by=who.username,
        recorded_at=now,
    )
    if follow_up_due is not None and follow_up_due < held_on:
        raise ApiError(
            422, "invalid_input", "follow_up_due: not before the meeting.", {"field": "follow_up_due"}
        )
    session.add(meeting)
    _bump(topic, now)
    session.add(topic)
    session.flush()
    assert meeting.id is not None
    _publish(
        session,
        topic,
        "topic.meeting_recorded",
        TopicMeetingRecorded(
            topic_id=topic_id,
            meeting_id=meeting.id,
            held_on=held_on,
            decision=meeting.decision,
            follow_up_due=follow_up_due,
            case_ids=linked_ids(session, topic_id),
            version=topic.version,
            at=now,
        ),
        now,
    )
    return meeting


def close(
    session: Session,
    who: Principal,
    j: Jurisdiction,
    lifecycle: Lifecycle,
    topic_id: str,
    *,
    version: int,
    outcome: str,
    resolves: bool,
    now: datetime,
) -> dict[str, list[str]]:
    """Close an open topic with its outcome and carry it to every linked case (the module's rules);
    returns which cases were updated and which resolved."""
    check_writer(who)
    topic = load(session, who, j, topic_id, lock=True)
    _check_version(topic, version)
    outcome = _text(outcome, "outcome", MAX_OUTCOME)
    updated: list[str] = []
    resolved: list[str] = []
    text = OUTCOME_PREFIX + outcome
    for case in cases_of(session, topic_id):
        locked = session.exec(select(Case).where(Case.case_id == case.case_id).with_for_update()).one()
        if locked.status in FINAL:
            continue
        lifecycle.converse(session, locked, "public", who.username, text, now)
        updated.append(locked.case_id)
        if resolves and locked.status in RESOLVABLE and not locked.triage:
            if _walk_to_resolved(session, lifecycle, locked, who, topic, outcome, now):
                resolved.append(locked.case_id)
    topic.status = "closed"
    topic.outcome = outcome
    topic.resolves = resolves
    topic.closed_by = who.username
    topic.closed_at = now
    _bump(topic, now)
    session.add(topic)
    session.flush()
    street = j.streets.get(topic.street_id)
    _publish(
        session,
        topic,
        "topic.closed",
        TopicClosed(
            topic_id=topic_id,
            street_id=topic.street_id,
            centre_station_id=street.centre_station_id if street else "",
            title=topic.title,
            outcome=outcome,
            resolves=resolves,
            case_ids=linked_ids(session, topic_id),
            version=topic.version,
            at=now,
        ),
        now,
    )
    return {"updated": updated, "resolved": resolved}


def _walk_to_resolved(
    session: Session,
    lifecycle: Lifecycle,
    case: Case,
    who: Principal,
    topic: Topic,
    outcome: str,
    now: datetime,
) -> bool:
    """acknowledge → dispatch (to the topic's body) → resolve (the outcome as note), as the supervisor;
    False (the case keeps its state so far) when the table refuses a step."""
    steps = {
        CaseStatus.NEW: Request("acknowledge"),
        CaseStatus.ACKNOWLEDGED: Request("dispatch", assignee=topic.body[:60]),
        CaseStatus.DISPATCHED: Request("resolve", note=outcome, topic_id=topic.topic_id),
    }
    while case.status in steps:
        try:
            lifecycle.transition(
                session, case, "supervisor", who.username, steps[CaseStatus(case.status)], now
            )
        except Refused:
            return False
    return case.status == CaseStatus.RESOLVED


# ---- views ----------------------------------------------------------------------------------------


def suggestion_view(s: suggestions.Suggestion, j: Jurisdiction) -> dict[str, Any]:
    """A suggestion as the API and console show it."""
    category = j.categories.get(s.category)
    grid = j.grids.get(s.grid_id) if s.grid_id else None
    return {
        "key": s.key,
        "category": s.category,
        "category_name": category.name_zh if category else s.category,
        "street_id": s.street_id,
        "kind": s.kind,
        "grid_id": s.grid_id,
        "grid_name": grid.name_zh if grid else None,
        "lat": s.lat,
        "lon": s.lon,
        "case_ids": list(s.case_ids),
        "first_at": s.first_at,
        "last_at": s.last_at,
    }


def topic_summary(topic: Topic, case_count: int) -> dict[str, Any]:
    """A topic in a list."""
    return {
        "topic_id": topic.topic_id,
        "street_id": topic.street_id,
        "category": topic.category,
        "title": topic.title,
        "body": topic.body,
        "status": topic.status,
        "version": topic.version,
        "cases": case_count,
        "created_at": _utc(topic.created_at),
        "updated_at": _utc(topic.updated_at),
        "outcome": topic.outcome,
    }


def topic_detail(session: Session, topic: Topic) -> dict[str, Any]:
    """A topic with its cases and meetings."""
    cases = cases_of(session, topic.topic_id)
    return {
        **topic_summary(topic, len(cases)),
        "lat": topic.lat,
        "lon": topic.lon,
        "suggestion": topic.suggestion,
        "created_by": topic.created_by,
        "resolves": topic.resolves,
        "closed_by": topic.closed_by,
        "closed_at": _utc(topic.closed_at) if topic.closed_at else None,
        "case_list": [
            {
                "case_id": c.case_id,
                "status": c.status,
                "category": c.category,
                "station_id": c.station_id,
                "grid_id": c.grid_id,
                "place_name": c.place_name,
                "lat": c.lat,
                "lon": c.lon,
                "submitted_at": _utc(c.submitted_at),
                "version": c.version,
            }
            for c in cases
        ],
        "meetings": [
            {
                "id": m.id,
                "held_on": m.held_on,
                "participants": m.participants,
                "decision": m.decision,
                "follow_up_owner": m.follow_up_owner,
                "follow_up_due": m.follow_up_due,
                "recorded_by": m.recorded_by,
                "recorded_at": _utc(m.recorded_at),
            }
            for m in meetings(session, topic.topic_id)
        ],
    }
