"""The closer's Kafka entry points (`reports.routed`, `reports.feedback`: the rider's answers, replies
and nudges): parse, hand to the lifecycle.

Each runs inside the consumer's batch transaction; `Lifecycle` makes the change (services/closer/
lifecycle.py), the consumer commits.
"""

from __future__ import annotations

from sqlmodel import Session

from gridloop.clock import utcnow
from gridloop.consumer import Incoming
from schemas.events import CaseNudged, CaseRiderReplied, ReportFeedback, ReportRouted
from services.closer.lifecycle import Lifecycle


class Handlers:
    """`report.routed` opens or grows a case; `report.feedback` confirms or reopens one."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def on_routed(self, session: Session, item: Incoming) -> None:
        """A router decision: a new case, or one more report on an existing one."""
        d = item.data
        assert isinstance(d, ReportRouted)
        self.lifecycle.take_report(session, d, utcnow())

    def replay_routed(self, session: Session, item: Incoming) -> None:
        """A decision seen before, in a new record (the router replayed it): the reporter gets it again."""
        d = item.data
        assert isinstance(d, ReportRouted)
        self.lifecycle.replay_report(session, d.report_id)

    def on_feedback(self, session: Session, item: Incoming) -> None:
        """The rider's answer on a resolved case."""
        d = item.data
        assert isinstance(d, ReportFeedback)
        self.lifecycle.feedback(session, d, utcnow())

    def on_rider_replied(self, session: Session, item: Incoming) -> None:
        """A rider's words or photo on their report."""
        d = item.data
        assert isinstance(d, CaseRiderReplied)
        self.lifecycle.rider_replied(session, d, utcnow())

    def on_nudged(self, session: Session, item: Incoming) -> None:
        """A rider's 催办: the case goes on the supervision list."""
        d = item.data
        assert isinstance(d, CaseNudged)
        self.lifecycle.nudged(session, d, utcnow())
