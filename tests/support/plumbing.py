"""A test service's plumbing tables and a consumer that records what it applies (database and Kafka tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, String, Table, select
from sqlmodel import Session

from gridloop.consumer import IdempotentConsumer, Incoming, _Raw
from gridloop.db import Database, service_base
from gridloop.plumbing import define_plumbing
from gridloop.rawsql import Raw, Tx, insert_row
from schemas.events import ReportFeedback, make_event

Base = service_base("plumbingtest")
TABLES = define_plumbing(Base.metadata)
APPLIED = Table(
    "applied", Base.metadata, Column("event_id", String(64), primary_key=True), Column("comment", String(100))
)


def feedback_raw(offset: int, comment: str = "ok", event_id: str | None = None) -> _Raw:
    """A `report.feedback` message as it would come off the topic."""
    data = ReportFeedback(
        report_id="r1", case_id="c1", fixed=True, comment=comment, at=datetime(2026, 11, 24, tzinfo=UTC)
    )
    event = make_event(
        "report.feedback",
        data,
        source="reporter",
        subject="c1",
        time=datetime(2026, 11, 24, tzinfo=UTC),
        event_id=event_id,
    )
    return _Raw("reports.feedback", 0, offset, "c1", event.model_dump_json().encode())


def make_consumer(
    db: Database, fail_on: str | None = None, replays: list[str] | None = None, plain_sql: bool = False
) -> IdempotentConsumer:
    """A consumer whose handler records each event (and fails on one comment, if asked)."""

    def handler(session: Session | Tx, item: Incoming) -> None:
        comment = item.data.comment  # type: ignore[attr-defined]
        if comment == fail_on:
            raise ValueError("cannot apply this one")
        if isinstance(session, Tx):
            insert_row(Raw(session), "applied", {"event_id": item.event.id, "comment": comment})
        else:
            session.execute(APPLIED.insert().values(event_id=item.event.id, comment=comment))

    def replay(_session: Session, item: Incoming) -> None:
        if replays is not None:
            replays.append(item.event.id)

    return IdempotentConsumer(
        group="g",
        topics=["reports.feedback"],
        db=db,
        tables=TABLES,
        handlers={"report.feedback": handler},
        replays={"report.feedback": replay},
        service="test",
        attempts=3,
        plain_sql=plain_sql,
    )


def applied(db: Database) -> list[str]:
    """Comments of the applied events, in order."""
    with db.engine.connect() as conn:
        return [r.comment for r in conn.execute(select(APPLIED.c.comment).order_by(APPLIED.c.comment))]
