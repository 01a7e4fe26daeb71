"""The project's topics with explicit partition counts, created or verified with kafka-python's admin."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewPartitions, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from gridloop.kafkaauth import PLAINTEXT, KafkaLoginError, KafkaSecurity, login_problem_sync

log = logging.getLogger(__name__)

REPORTS_SUBMITTED = "reports.submitted"
REPORTS_ROUTED = "reports.routed"
REPORTS_FEEDBACK = "reports.feedback"
CASES_EVENTS = "cases.events"
STAFF_EVENTS = "staff.events"
DEADLETTER = "deadletter"
TOPICS_EVENTS = "topics.events"
"""Topics (议题) of area-level common issues, keyed by topic id: a topic's events stay in order on
one partition, and a topic's many cases are not one case's key (so not on `cases.events`)."""
ALL_TOPICS = (
    REPORTS_SUBMITTED, REPORTS_ROUTED, REPORTS_FEEDBACK, CASES_EVENTS, STAFF_EVENTS, DEADLETTER, TOPICS_EVENTS
)  # fmt: skip


@dataclass(frozen=True)
class TopicState:
    """What `ensure_topics` found or did for one topic."""

    name: str
    partitions: int
    action: str  # created, exists, grown


class BrokersMissing(TimeoutError):
    """Fewer live brokers than the topics' replication needs, still after the wait."""


def live_brokers(cluster: Mapping[str, Any]) -> list[int]:
    """The ids of the brokers that can hold replicas, from a DescribeCluster answer: registered and
    not fenced (a broker that has started but not caught up with the controller is fenced)."""
    return sorted(int(b["broker_id"]) for b in cluster.get("brokers") or () if not b.get("is_fenced"))


def brokers_missing_message(bootstrap_servers: str, live: Sequence[int], needed: int, waited: float) -> str:
    """What `gridloop topics` says when the cluster never had enough live brokers."""
    ids = ", ".join(str(i) for i in live) or "none"
    return (
        f"Kafka at {bootstrap_servers} has {len(live)} of the {needed} live brokers the topics need "
        f"(live: {ids}) after waiting {waited:g} s; start the missing brokers, or lower "
        "GRIDLOOP_TOPIC_REPLICATION / --wait-brokers"
    )


def wait_for_brokers(
    describe: Callable[[], Mapping[str, Any]],
    needed: int,
    timeout: float,
    bootstrap_servers: str = "",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """Ask the cluster (`describe`) until `needed` brokers are live; their ids, or BrokersMissing.

    Brokers of a cluster started together register one by one: creating a topic with replication 3
    before the third has registered fails for good, so topic creation waits here first."""
    deadline = clock() + timeout
    while True:
        try:
            live = live_brokers(describe())
        except KafkaError as exc:  # the controller may not answer yet either
            log.info("waiting for Kafka brokers: %s", exc)
            live = []
        if len(live) >= needed:
            return live
        if clock() >= deadline:
            raise BrokersMissing(brokers_missing_message(bootstrap_servers, live, needed, timeout))
        log.info("waiting for Kafka brokers: %d of %d live (%s)", len(live), needed, live)
        sleep(1.0)


def _admin(bootstrap_servers: str, timeout: float, security: KafkaSecurity) -> KafkaAdminClient:
    # a refused login is final: say so at once, not after the admin's retries ("Unable to bootstrap")
    problem = login_problem_sync(bootstrap_servers, security)
    if problem:
        raise KafkaLoginError(problem)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return KafkaAdminClient(
                bootstrap_servers=bootstrap_servers.split(","),
                client_id="gridloop-topics",
                request_timeout_ms=15_000,
                **security.client_kwargs(),
            )
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka at {bootstrap_servers} did not answer: {exc}") from exc
            time.sleep(0.5)


def topic_names(prefix: str = "") -> tuple[str, ...]:
    """The project's topic names as they are on the broker."""
    return tuple(prefix + name for name in ALL_TOPICS)


def topic_configs(replication: int) -> dict[str, str]:
    """Per-topic settings for a replication factor: with 3+ copies a write needs 2 in sync (acks=all),
    so one broker may die without losing an acknowledged event or stopping writes."""
    return {"min.insync.replicas": "2"} if replication >= 3 else {}


def ensure_topics(
    bootstrap_servers: str,
    partitions: int = 6,
    replication: int = 1,
    timeout: float = 30.0,
    prefix: str = "",
    brokers: int = 0,
    security: KafkaSecurity = PLAINTEXT,
) -> list[TopicState]:
    """Create missing topics (`topic_configs` set on them) and grow ones with too few partitions;
    never shrink or delete. First wait (up to `timeout`) for max(`brokers`, `replication`) live
    brokers: BrokersMissing names how many there are. KafkaLoginError when the broker refuses the
    login (`security`)."""
    names = topic_names(prefix)
    admin = _admin(bootstrap_servers, timeout, security)
    try:
        needed = max(brokers, replication)
        if needed > 1:  # one broker answering is one live broker: nothing to wait for
            wait_for_brokers(admin.describe_cluster, needed, timeout, bootstrap_servers)
        existing = {
            t["name"]: len(t["partitions"])
            for t in admin.describe_topics()
            if not t.get("error_code") and t.get("partitions")
        }
        states: list[TopicState] = []
        missing = [name for name in names if name not in existing]
        if missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(name, partitions, replication, topic_configs=topic_configs(replication))
                        for name in missing
                    ],
                    timeout_ms=int(timeout * 1000),
                )
            except TopicAlreadyExistsError:
                pass  # another process created it between our look and our create
            states += [TopicState(name, partitions, "created") for name in missing]
        grow = {
            n: NewPartitions(partitions) for n, count in existing.items() if n in names and count < partitions
        }
        if grow:
            admin.create_partitions(grow)
        for name in names:
            if name in existing:
                action = "grown" if name in grow else "exists"
                states.append(
                    TopicState(name, max(existing[name], partitions if name in grow else 0), action)
                )
        _wait_for_leaders(admin, names, timeout)
        return states
    finally:
        admin.close()


def _wait_for_leaders(admin: KafkaAdminClient, names: tuple[str, ...], timeout: float) -> None:
    """Block until every partition of our topics has a leader (a fresh topic needs a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        described = admin.describe_topics(list(names))
        ready = all(
            not t.get("error_code") and t["partitions"] and all(p["leader_id"] >= 0 for p in t["partitions"])
            for t in described
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("topics have partitions without a leader")
        time.sleep(0.2)
