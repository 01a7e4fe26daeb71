"""The router's Kafka entry points: each takes its event's data and hands it to the database side.

`report.submitted` (topic `reports.submitted`, consumer group ``router``) is decided by
``Decisions.route``; the case state events of `cases.events` (group ``router-cases``) keep the index
current through ``index.follow_case``. Both consumers run plain SQL (their handlers take a ``Tx``).
"""

from __future__ import annotations

from gridloop.consumer import Incoming
from gridloop.rawsql import Tx
from schemas.events import REGISTRY, CaseTransitioned, ReportSubmitted
from services.router import index
from services.router.decisions import Decisions

CASE_STATE_EVENTS = tuple(name for name, (_, model) in REGISTRY.items() if model is CaseTransitioned)
"""The `cases.events` types the router follows: every one that carries a case's state."""


class Handlers:
    """The handlers of both consumers, bound to one `Decisions`."""

    def __init__(self, decisions: Decisions) -> None:
        self.decisions = decisions

    def on_submitted(self, session: Tx, item: Incoming) -> None:
        """`report.submitted`: decide the report's case and queue `report.routed`."""
        data = item.data
        assert isinstance(data, ReportSubmitted)
        self.decisions.route(session, data)

    def replay(self, session: Tx, item: Incoming) -> None:
        """`report.submitted` seen before, in a new record (a re-drive): publish the stored decision again."""
        data = item.data
        assert isinstance(data, ReportSubmitted)
        self.decisions.replay(session, data)

    def on_case_event(self, session: Tx, item: Incoming) -> None:
        """A case event: follow the case's state in the index."""
        data = item.data
        if isinstance(data, CaseTransitioned):
            index.follow_case(session, data, item.event.type, self.decisions.centre_ids)
