"""`gridloop topics` waits for enough live brokers before it creates (on a fake cluster and clock)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from kafka.errors import NodeNotReadyError

from gridloop.topics import BrokersMissing, brokers_missing_message, live_brokers, wait_for_brokers


def cluster(*brokers: int, fenced: tuple[int, ...] = ()) -> dict[str, Any]:
    """A DescribeCluster answer (kafka-python's dict) with these brokers registered."""
    return {"brokers": [{"broker_id": b, "host": f"kafka{b}", "is_fenced": b in fenced} for b in brokers]}


class FakeCluster:
    """Answers DescribeCluster from a script, one answer per call (the last repeats); a clock that
    moves only when the waiter sleeps."""

    def __init__(self, *answers: Mapping[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.now = 0.0
        self.sleeps: list[float] = []

    def describe(self) -> Mapping[str, Any]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_live_brokers_are_the_registered_unfenced_ones() -> None:
    """A fenced broker (started, not yet caught up with the controller) cannot hold a replica."""
    assert live_brokers(cluster(3, 1, 2, fenced=(2,))) == [1, 3]
    assert live_brokers(cluster(2, 3, 1)) == [1, 2, 3]
    assert live_brokers({"brokers": []}) == []
    assert live_brokers({}) == []


def test_waits_until_every_needed_broker_is_live() -> None:
    """Brokers registering one by one (and a controller not answering at first): the wait goes on
    until three are live, then returns their ids."""
    fake = FakeCluster(
        NodeNotReadyError("no controller yet"),
        cluster(1),
        cluster(1, 2, 3, fenced=(3,)),
        cluster(1, 2, 3),
    )
    live = wait_for_brokers(fake.describe, 3, 120.0, "kafka1:9092", clock=fake.clock, sleep=fake.sleep)
    assert live == [1, 2, 3]
    assert fake.calls == 4
    assert fake.sleeps == [1.0, 1.0, 1.0]


def test_enough_brokers_at_once_does_not_sleep() -> None:
    """More live brokers than needed: no wait at all."""
    fake = FakeCluster(cluster(1, 2, 3, 4))
    assert wait_for_brokers(fake.describe, 3, 120.0, clock=fake.clock, sleep=fake.sleep) == [1, 2, 3, 4]
    assert (fake.calls, fake.sleeps) == (1, [])


def test_gives_up_after_the_deadline_naming_the_live_brokers() -> None:
    """A broker that never comes: after the deadline the error says how many are live and which."""
    fake = FakeCluster(cluster(1, 2, 3, fenced=(3,)))
    with pytest.raises(BrokersMissing) as missing:
        wait_for_brokers(fake.describe, 3, 5.0, "kafka1:9092,kafka2:9092", clock=fake.clock, sleep=fake.sleep)
    assert str(missing.value) == (
        "Kafka at kafka1:9092,kafka2:9092 has 2 of the 3 live brokers the topics need (live: 1, 2) "
        "after waiting 5 s; start the missing brokers, or lower GRIDLOOP_TOPIC_REPLICATION / --wait-brokers"
    )
    assert isinstance(missing.value, TimeoutError)  # the CLI turns it into exit 1 with the message
    assert fake.calls == 6  # at 0, 1, 2, 3, 4 and 5 s
    assert fake.now == 5.0


def test_no_broker_answering_says_none() -> None:
    """A cluster that never answers DescribeCluster: the message says none is live."""
    assert brokers_missing_message("k:9092", [], 3, 120.0) == (
        "Kafka at k:9092 has 0 of the 3 live brokers the topics need (live: none) after waiting 120 s; "
        "start the missing brokers, or lower GRIDLOOP_TOPIC_REPLICATION / --wait-brokers"
    )
    fake = FakeCluster(NodeNotReadyError("down"))
    with pytest.raises(BrokersMissing, match=r"has 0 of the 2 live brokers .*\(live: none\)"):
        wait_for_brokers(fake.describe, 2, 2.0, "k:9092", clock=fake.clock, sleep=fake.sleep)
