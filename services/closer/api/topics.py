"""The topics API (议题): suggestions, topics of the caller's streets, linking cases, meetings, closing.

Supervisors write; supervisors and admins read; staff get 403; another street's topic is 404
(services/closer/topics.py holds the rules, this module only the HTTP shape). Every write names the
topic version the caller saw: an older one, or a closed topic, is 409.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gridloop.clock import utcnow
from services.closer import topics
from services.closer.context import Closer, Ctx, Reader, Who

router = APIRouter(tags=["topics"])


class NewTopic(BaseModel):
    """POST /api/v1/topics: a topic from a suggestion (its key and cases) or from cases picked by hand."""

    title: str = Field(max_length=1000, description="What the common issue is (≤ 200 characters).")
    body: str = Field(max_length=1000, description="Who takes it up, e.g. 街区治理委员会 (≤ 120 characters).")
    case_ids: list[str] = Field(max_length=topics.MAX_CASES, description="The cases, all of one street.")
    suggestion: str | None = Field(None, max_length=40, description="The suggestion's key, if from one.")


class Linking(BaseModel):
    """POST /api/v1/topics/{id}/cases: cases to add or take off."""

    version: int = Field(ge=1)
    add: list[str] = Field(default_factory=list, max_length=topics.MAX_CASES)
    remove: list[str] = Field(default_factory=list, max_length=topics.MAX_CASES)


class Meeting(BaseModel):
    """POST /api/v1/topics/{id}/meetings: the meeting as held."""

    version: int = Field(ge=1)
    held_on: date
    participants: str = Field(max_length=4000, description="Who took part, as text (≤ 2000 characters).")
    decision: str = Field(max_length=1000, description="≤ 500 characters; riders see it.")
    follow_up_owner: str | None = Field(None, max_length=1000, description="≤ 120 characters.")
    follow_up_due: date | None = None


class Closing(BaseModel):
    """POST /api/v1/topics/{id}/close: the outcome, told to every linked case's riders."""

    version: int = Field(ge=1)
    outcome: str = Field(max_length=1000, description=f"≤ {topics.MAX_OUTCOME} characters.")
    resolves: bool = Field(False, description="The outcome fixes the issue: resolve the cases that can be.")


def overview(ctx: Closer, who: Any) -> dict[str, Any]:
    """Suggestions, open topics and closed ones for the caller (the list page's data)."""
    topics.check_reader(who)
    j = ctx.jurisdiction
    with ctx.runtime.db.session() as session:
        now = utcnow()
        found = topics.suggested(session, who, j, now)

        def listed(status: str) -> list[dict[str, Any]]:
            return [
                topics.topic_summary(t, len(topics.linked_ids(session, t.topic_id)))
                for t in topics.listing(session, who, j, status)
            ]

        return {
            "suggestions": [topics.suggestion_view(s, j) for s in found],
            "open": listed("open"),
            "closed": listed("closed"),
        }


@router.get("/api/v1/topics")
async def list_topics(ctx: Ctx, who: Reader) -> dict[str, Any]:
    """Suggestions (computed now), open topics and closed ones of the caller's streets."""
    return await asyncio.to_thread(overview, ctx, who)


@router.get("/api/v1/topics/{topic_id}")
async def get_topic(ctx: Ctx, who: Reader, topic_id: str) -> dict[str, Any]:
    """A topic with its cases and meetings."""

    def work() -> dict[str, Any]:
        topics.check_reader(who)
        with ctx.runtime.db.session() as session:
            return topics.topic_detail(session, topics.load(session, who, ctx.jurisdiction, topic_id))

    return await asyncio.to_thread(work)


def create(ctx: Closer, who: Any, body: NewTopic) -> dict[str, Any]:
    """Open a topic in one transaction; its detail."""
    with ctx.runtime.db.session(write=True) as session:
        topic = topics.open_topic(
            session,
            who,
            ctx.jurisdiction,
            title=body.title,
            body=body.body,
            case_ids=body.case_ids,
            suggestion=body.suggestion,
            now=utcnow(),
        )
        view = topics.topic_detail(session, topic)
    ctx.changed()
    return view


def relink(ctx: Closer, who: Any, topic_id: str, body: Linking) -> dict[str, Any]:
    """Add or remove cases in one transaction; the topic's detail."""
    with ctx.runtime.db.session(write=True) as session:
        topic = topics.link(
            session, who, ctx.jurisdiction, topic_id, version=body.version, add=body.add, remove=body.remove,
            now=utcnow(),
        )  # fmt: skip
        view = topics.topic_detail(session, topic)
    ctx.changed()
    return view


def meet(ctx: Closer, who: Any, topic_id: str, body: Meeting) -> dict[str, Any]:
    """Record a meeting in one transaction; the topic's detail."""
    with ctx.runtime.db.session(write=True) as session:
        topics.record_meeting(
            session,
            who,
            ctx.jurisdiction,
            topic_id,
            version=body.version,
            held_on=body.held_on,
            participants=body.participants,
            decision=body.decision,
            follow_up_owner=body.follow_up_owner,
            follow_up_due=body.follow_up_due,
            now=utcnow(),
        )
        view = topics.topic_detail(session, topics.load(session, who, ctx.jurisdiction, topic_id))
    ctx.changed()
    return view


def finish(ctx: Closer, who: Any, topic_id: str, body: Closing) -> dict[str, Any]:
    """Close the topic and carry the outcome to its cases in one transaction."""
    with ctx.runtime.db.session(write=True) as session:
        effects = topics.close(
            session,
            who,
            ctx.jurisdiction,
            ctx.lifecycle,
            topic_id,
            version=body.version,
            outcome=body.outcome,
            resolves=body.resolves,
            now=utcnow(),
        )
        view = {
            **topics.topic_detail(session, topics.load(session, who, ctx.jurisdiction, topic_id)),
            **effects,
        }
    ctx.changed()
    return view


@router.post("/api/v1/topics", status_code=201)
async def post_topic(ctx: Ctx, who: Who, body: NewTopic) -> dict[str, Any]:
    """Open a topic linking cases of one street (none in a topic yet)."""
    return await asyncio.to_thread(create, ctx, who, body)


@router.post("/api/v1/topics/{topic_id}/cases")
async def post_cases(ctx: Ctx, who: Who, topic_id: str, body: Linking) -> dict[str, Any]:
    """Add cases to an open topic or take them off."""
    return await asyncio.to_thread(relink, ctx, who, topic_id, body)


@router.post("/api/v1/topics/{topic_id}/meetings")
async def post_meeting(ctx: Ctx, who: Who, topic_id: str, body: Meeting) -> dict[str, Any]:
    """Record the topic's meeting."""
    return await asyncio.to_thread(meet, ctx, who, topic_id, body)


@router.post("/api/v1/topics/{topic_id}/close")
async def post_close(ctx: Ctx, who: Who, topic_id: str, body: Closing) -> dict[str, Any]:
    """Close the topic with its outcome: every linked case gets it (services/closer/topics.py)."""
    return await asyncio.to_thread(finish, ctx, who, topic_id, body)
