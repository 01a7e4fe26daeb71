"""Is a record whose event id the ledger already holds a redelivery (skip) or a new record (replay)?

The ledger (`processed_events`) keeps, with each event id, the place of the record it was last
handled from. A consumer group reads a partition in offset order, so a record in that partition at
or before that place has been delivered to the group before: a replica died between its database
commit and its offset commit, or the group's offsets went back. Replaying its stored result would
only put a duplicate on the topic. A record anywhere else is new: the reporter's re-drive, or the
same event published again, whose downstream message the broker may have lost; that one is
replayed, and the ledger moves on to its place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Place:
    """Where a record sits: its topic (without the deployment's prefix), partition and offset."""

    topic: str
    partition: int
    offset: int


def is_redelivery(handled: Place | None, record: Place) -> bool:
    """True when `record` was delivered before: at or before `handled` (None: a row that predates sources)."""
    return (
        handled is not None
        and (record.topic, record.partition) == (handled.topic, handled.partition)
        and record.offset <= handled.offset
    )
