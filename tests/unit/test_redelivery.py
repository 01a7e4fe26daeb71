"""Redelivery or a new record: the pure rule the consumer applies to an event id it applied before."""

from __future__ import annotations

from gridloop.redelivery import Place, is_redelivery

HANDLED = Place("reports.submitted", 2, 40)


def test_the_same_partition_at_or_before_the_handled_offset_is_a_redelivery() -> None:
    """The group reads a partition in order: offsets up to the handled one were delivered before."""
    assert is_redelivery(HANDLED, Place("reports.submitted", 2, 40))
    assert is_redelivery(HANDLED, Place("reports.submitted", 2, 7))


def test_anywhere_else_is_a_new_record() -> None:
    """A later offset, another partition or topic, or a ledger row without a source: replay."""
    assert not is_redelivery(HANDLED, Place("reports.submitted", 2, 41))
    assert not is_redelivery(HANDLED, Place("reports.submitted", 3, 40))
    assert not is_redelivery(HANDLED, Place("reports.routed", 2, 40))
    assert not is_redelivery(None, Place("reports.submitted", 2, 40))
