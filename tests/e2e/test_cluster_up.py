"""The production shape on one machine (`gridloop up --brokers 3 --database postgres --replicas 2`),
started through the Stack API: a report posted at the reporter's entry is a case at the closer's entry,
also with one reporter replica killed, and stop() leaves nothing running."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from gridloop.cli import load_demo
from gridloop.demo import DEMO_PLACES
from gridloop.settings import SERVICES as ALL_SERVICES
from gridloop.stack import PROXY, Stack
from schemas.reference import load_places
from tests.support.stacks import stack_settings, staff_token, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]
SERVICES = ALL_SERVICES  # every service runs as two replicas, the notifier too


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


def test_three_brokers_postgres_and_two_replicas_behind_entries(tmp_path: Path) -> None:
    """Reports in at the reporter's entry become cases at the closer's entry, on 3 brokers (RF 3, min
    ISR 2) and PostgreSQL with 2 replicas a service; a killed replica is skipped; stop() ends it all."""
    given = os.environ.get("GRIDLOOP_TEST_POSTGRES_URL")  # else the stack's own embedded server
    settings = stack_settings(tmp_path / "var", "", f"cl{uuid.uuid4().hex[:6]}.")
    stack = Stack(
        settings=settings,
        broker="kafka",
        demo=load_demo,
        brokers=3,
        database="postgres",
        database_url=given,
        database_prefix=f"t_{uuid.uuid4().hex[:6]}_",
        replicas=2,
    )
    place = next(p for p in load_places(DEMO_PLACES) if p.grid_id == "yh-g4")
    try:
        stack.start()
        assert stack.kafka is not None and len(stack.kafka.pids()) == 3
        assert topic_shape(stack.bootstrap_servers, f"{settings.topic_prefix}reports.submitted") == ({3}, "2")
        assert sorted(stack.procs) == sorted([PROXY, *(f"{s}-{i}" for s in SERVICES for i in (0, 1))])
        for service in SERVICES:
            url = stack.service_env(service)["DATABASE_URL"]
            assert url.startswith("postgresql") and url.split("?")[0].endswith(f"_{service}")
        auth = {"Authorization": f"Bearer {staff_token(stack.url('closer'), 'yh-s4')}"}

        def report(category: str, description: str) -> None:
            r = httpx.post(
                f"{stack.url('reporter')}/api/v1/reports",
                json={"code": place.code, "category": category, "description": description},
            )
            assert r.status_code == 202, r.text

        def queued(description: str) -> list[dict[str, Any]]:
            items = httpx.get(f"{stack.url('closer')}/api/v1/queue", headers=auth).json()["items"]
            return [i for i in items if i["description"] == description]

        report("facility_damage", "栏杆倒了 · cluster")
        [case] = wait_for(
            lambda: queued("栏杆倒了 · cluster"), timeout=60, what="the case at the closer entry"
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
        wait_for(lambda: queued("井盖破损 · one reporter left"), timeout=60, what="the second case")
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
