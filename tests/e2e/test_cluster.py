"""The production shape on one machine (`gridloop up --brokers 3 --database postgres --replicas 2`,
through the Stack API), started once for two tests that run in this order:
1. The fault test: a broker and replicas killed with kill -9 while riders post at a steady rate; every
   report answered 202 ends in exactly one case, and each is on `reports.submitted` and on
   `reports.routed` exactly once (records counted on the brokers, not deduplicated).
2. The shape: RF 3 and min ISR 2, a database per service, a report in at the reporter's entry is a case
   at the closer's entry, the live stream through the entry, a killed replica skipped, and stop()
   leaves nothing running. It comes second: its reports would count as riders' in the first.

One cluster for both: a start of three brokers, PostgreSQL and eight replicas is a minute of CI's two
cores."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from gridloop.cli import load_demo
from gridloop.demo import DEMO_PLACES
from gridloop.settings import SERVICES as ALL_SERVICES
from gridloop.stack import PROXY, Stack
from gridloop.topics import REPORTS_ROUTED, REPORTS_SUBMITTED
from schemas.reference import load_places
from tests.support.stacks import stack_settings, staff_token, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900)]
SERVICES = ("reporter", "router", "closer")
PLACES = load_places(DEMO_PLACES)
CATEGORIES = ("sanitation", "shared_bikes", "fire_lane_blocked", "ebike_flying_wire", "other")
RATE = 12.0  # reports a second: steady on two cores next to 3 brokers, PostgreSQL and 6 replicas


class Riders(threading.Thread):
    """Riders posting at a steady rate through the reporter's entry; keeps what was answered 202."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(name="riders", daemon=True)
        self.url = url
        self.rate = rate
        self.accepted: list[str] = []
        self.answers: Counter[str] = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        """Post until halted, one report every 1/rate seconds (no catching up after a slow answer)."""
        i = 0
        with httpx.Client(timeout=15) as client:
            while not self.halt.is_set():
                started = time.monotonic()
                place = PLACES[i % len(PLACES)]
                body = {
                    "code": place.code,
                    "category": CATEGORIES[(i // len(PLACES)) % len(CATEGORIES)],
                    "description": f"fault {i}",
                }
                try:
                    r = client.post(self.url + "/api/v1/reports", json=body)
                    self.answers[str(r.status_code)] += 1
                    if r.status_code == 202:
                        self.accepted.append(str(r.json()["report_id"]))
                except httpx.HTTPError as exc:  # a connection cut by a kill: not accepted, so not owed
                    self.answers[type(exc).__name__] += 1
                i += 1
                self.halt.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def posted_for(self, seconds: float) -> None:
        """Let the riders post for a while."""
        time.sleep(seconds)


def records_by_report(bootstrap: str, topic: str) -> Counter[str]:
    """How many times each report id is on the topic: every record of every partition, read raw."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert parts, topic
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        seen: Counter[str] = Counter()
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=1000, max_records=5000).values():
                for record in records:
                    seen[json.loads(record.value)["data"]["report_id"]] += 1
        return seen
    finally:
        consumer.close()


def lags(stack: Stack) -> dict[tuple[str, str], float]:
    """The consumer lag series the router exports (per group and topic)."""
    text_ = httpx.get(stack.url("router") + "/metrics", timeout=10).text
    return {
        (g, t): float(v)
        for g, t, v in re.findall(r'gridloop_consumer_lag\{group="([^"]+)",topic="([^"]+)"\} (\S+)', text_)
    }


def outbox_leader(stack: Stack, service: str) -> int:
    """Which replica of a service relays its outbox now (each replica's own /metrics, not the entry's)."""

    def leads(index: int) -> bool:
        try:
            text_ = httpx.get(stack.replica_url(service, index) + "/metrics", timeout=10).text
        except httpx.ConnectError:
            return False  # a killed replica leads nothing
        return any(
            sample.labels == {"service": service, "role": "outbox"} and sample.value == 1.0
            for family in text_string_to_metric_families(text_)
            if family.name == "gridloop_leader"
            for sample in family.samples
        )

    leading = [i for i in range(stack.replicas) if leads(i)]
    assert len(leading) == 1, (service, leading)
    return leading[0]


def topic_shape(bootstrap: str, topic: str) -> tuple[set[int], str]:
    """The replica counts of a topic's partitions and its min.insync.replicas override."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="test-cluster-up")
    try:
        [described] = admin.describe_topics([topic])
        configs: Any = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    [by_name] = configs.values()
    min_isr = by_name[topic]["min.insync.replicas"]
    value = min_isr["value"] if isinstance(min_isr, dict) else min_isr
    return {len(p["replica_nodes"]) for p in described["partitions"]}, str(value)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """3 brokers (RF 3, min ISR 2), PostgreSQL (a database per service), 2 replicas of each behind entries."""
    prefix = f"flt{uuid.uuid4().hex[:6]}."
    var: Path = tmp_path_factory.mktemp("cluster")
    # re-drive publishes a report again on purpose (same id) when it waited this long for a case: a
    # recovery for a broker that lost it, not a relay duplicate; kept out of this count's way
    settings = stack_settings(var / "var", "", prefix, redrive_after_seconds=3600, topic_partitions=6)
    stack = Stack(
        settings=settings,
        broker="kafka",
        demo=load_demo,
        brokers=3,
        database="postgres",
        database_url=os.environ.get("GRIDLOOP_TEST_POSTGRES_URL"),
        database_prefix=f"f_{uuid.uuid4().hex[:6]}_",
        replicas=2,
        extra_env={
            # one test client is every rider: the limits per address, code and rider would refuse it
            "GRIDLOOP_RATE_PER_ADDRESS": "0",
            "GRIDLOOP_RATE_NEW_RIDERS_PER_ADDRESS": "0",
            "GRIDLOOP_RATE_PER_CODE": "0",
            "GRIDLOOP_RATE_PER_RIDER": "0",
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def test_kill_a_broker_and_a_replica_of_each_service_while_riders_post(cluster: Stack) -> None:
    """kill -9 one broker, then one replica of each service, restart them: nothing lost, nothing doubled."""
    assert cluster.kafka is not None
    riders = Riders(cluster.url("reporter"), RATE)
    riders.start()
    try:
        riders.posted_for(10)
        cluster.kafka.kill_node(2)  # a broker: partitions it led elect a new leader from the ISR
        riders.posted_for(15)
        # the replica that relays each outbox: the one whose death could double or lose a record
        killed = {service: outbox_leader(cluster, service) for service in SERVICES}
        for service, index in killed.items():
            cluster.kill(service, index)
        riders.posted_for(15)
        assert {s: outbox_leader(cluster, s) for s in SERVICES} == {s: 1 - i for s, i in killed.items()}
        cluster.kafka.start_node(2)
        for service, index in killed.items():
            cluster.restart(service, index)
        riders.posted_for(10)
    finally:
        riders.halt.set()
        riders.join(timeout=30)
    accepted = riders.accepted
    assert len(accepted) == len(set(accepted))
    assert len(accepted) >= RATE * 30, riders.answers  # the entries kept answering through the faults

    closer = create_engine(cluster.service_env("closer")["DATABASE_URL"])

    def cases_of_reports() -> dict[str, list[str]]:
        with closer.connect() as conn:
            rows = conn.execute(text("SELECT report_id, case_id FROM case_report")).all()
        found: dict[str, list[str]] = {}
        for report_id, case_id in rows:
            found.setdefault(report_id, []).append(case_id)
        return found

    wait_for(
        lambda: set(accepted) <= set(cases_of_reports()),
        timeout=180,
        every=1.0,
        what="every report in a case",
    )
    in_cases = cases_of_reports()
    assert all(len(in_cases[r]) == 1 for r in accepted)  # exactly one case each
    closer.dispose()
    wait_for(
        lambda: lags(cluster) and all(v == 0 for v in lags(cluster).values()),
        timeout=120,
        every=1.0,
        what="consumer lag back to 0 after the rebalance",
    )

    reporter = create_engine(cluster.service_env("reporter")["DATABASE_URL"])
    with reporter.connect() as conn:
        told: dict[str, str | None] = dict(conn.execute(text("SELECT report_id, case_id FROM report")).all())
    reporter.dispose()
    assert {r: told[r] for r in accepted} == {r: in_cases[r][0] for r in accepted}  # the rider sees that case

    on_topic = records_by_report(cluster.bootstrap_servers, cluster.settings.topic_prefix + REPORTS_SUBMITTED)
    assert {r: n for r, n in on_topic.items() if n != 1} == {}  # no relay duplicates: counted, not deduped
    assert set(accepted) <= set(on_topic)
    # a report on the topic that no rider was told 202 for: its answer was cut by a kill, never more
    unanswered = sum(n for answer, n in riders.answers.items() if not answer.isdigit())
    assert len(set(on_topic) - set(accepted)) <= unanswered
    # and each is routed exactly once: a replica killed between its commit and its offset commit is
    # redelivered to the other, which skips the batch without publishing its decisions again
    routed = records_by_report(cluster.bootstrap_servers, cluster.settings.topic_prefix + REPORTS_ROUTED)
    assert routed == Counter(dict.fromkeys(on_topic, 1))


def test_the_shape_reports_through_the_entries_and_stop_leaves_nothing(cluster: Stack) -> None:
    """Reports in at the reporter's entry become cases at the closer's entry, on 3 brokers (RF 3, min
    ISR 2) and PostgreSQL with 2 replicas a service; a killed replica is skipped; stop() ends it all."""
    stack, settings = cluster, cluster.settings
    place = next(p for p in load_places(DEMO_PLACES) if p.grid_id == "yh-g4")
    try:
        assert stack.kafka is not None and len(stack.kafka.pids()) == 3
        assert topic_shape(stack.bootstrap_servers, f"{settings.topic_prefix}reports.submitted") == ({3}, "2")
        assert sorted(stack.procs) == sorted([PROXY, *(f"{s}-{i}" for s in ALL_SERVICES for i in (0, 1))])
        for service in ALL_SERVICES:
            url = stack.service_env(service)["DATABASE_URL"]
            assert url.startswith("postgresql") and url.split("?")[0].endswith(f"_{service}")
        auth = {"Authorization": f"Bearer {staff_token(stack.url('closer'), 'yh-s4')}"}

        def report(category: str, description: str) -> None:
            r = httpx.post(
                f"{stack.url('reporter')}/api/v1/reports",
                json={"code": place.code, "category": category, "description": description},
            )
            assert r.status_code == 202, r.text

        def queued(description: str, category: str) -> list[dict[str, Any]]:
            # by category: the fault test's riders left many cases of theirs in this station's queue
            query = {"category": category}
            items = httpx.get(f"{stack.url('closer')}/api/v1/queue", params=query, headers=auth).json()[
                "items"
            ]
            return [i for i in items if i["description"] == description]

        report("facility_damage", "栏杆倒了 · cluster")
        [case] = wait_for(
            lambda: queued("栏杆倒了 · cluster", "facility_damage"),
            timeout=60,
            what="the case at the closer entry",
        )
        assert case["status"] == "new"
        # the live queue through the entry: server-sent events from the start of the timeline
        with httpx.stream(
            "GET",
            f"{stack.url('closer')}/api/v1/queue/stream",
            headers={**auth, "Last-Event-ID": "0"},
            timeout=30,
        ) as live:
            assert live.headers["content-type"].startswith("text/event-stream")
            deadline = time.monotonic() + 30
            seen = next(
                line for line in live.iter_lines() if case["case_id"] in line or time.monotonic() > deadline
            )
            assert case["case_id"] in seen and seen.startswith("data:")

        stack.kill("reporter", 0)  # the entry skips the dead replica: the rider never sees it
        # another category, so the router opens a case of its own instead of merging into the first
        report("manhole_cover", "井盖破损 · one reporter left")
        wait_for(
            lambda: queued("井盖破损 · one reporter left", "manhole_cover"),
            timeout=60,
            what="the second case",
        )
        stack.restart("reporter", 0)
        replica = httpx.get(stack.replica_url("reporter", 0) + "/readyz")
        assert replica.status_code == 200
        pids = [p.pid for p in stack.procs.values()] + stack.kafka.pids()
        postgres_pid = stack.postgres.pid if stack.postgres is not None else None
    finally:
        stack.stop()
    left = [pid for pid in pids if running(pid)]
    assert left == []
    if postgres_pid is not None:  # pg_ctl stop returns once the server is down; its process ends after
        wait_for(lambda: not running(postgres_pid), timeout=10, what="PostgreSQL to exit")


def running(pid: int) -> bool:
    """Whether a process is alive (a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
