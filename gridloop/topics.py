"""The project's topics with explicit partition counts, created or verified with kafka-python's admin."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

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
ALL_TOPICS = (REPORTS_SUBMITTED, REPORTS_ROUTED, REPORTS_FEEDBACK, CASES_EVENTS, STAFF_EVENTS, DEADLETTER)


@dataclass(frozen=True)
class TopicState:
    """What `ensure_topics` found or did for one topic."""

    name: str
    partitions: int
    action: str  # created, exists, grown


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
    security: KafkaSecurity = PLAINTEXT,
) -> list[TopicState]:
    """Create missing topics (`topic_configs` set on them) and grow ones with too few partitions;
    never shrink or delete. KafkaLoginError when the broker refuses the login (`security`)."""
    names = topic_names(prefix)
    admin = _admin(bootstrap_servers, timeout, security)
    try:
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
