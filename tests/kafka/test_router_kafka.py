"""Two router processes in one consumer group on Apache Kafka: 1,000 reports, planned duplicates.

The reports go straight onto `reports.submitted` in the reporter's event shape and key (grid id, or
"none" for GPS reports), shuffled, so one cluster's reports arrive on several partitions and the two
routers decide them at the same time. The outcome is checked in the router's database and on
`reports.routed`: every report decided exactly once, every planned cluster exactly one case, none
doubled, none lost; the same with one router killed (kill -9) halfway through.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer
from sqlalchemy import func, select
from sqlmodel import col

from gridloop import migrate
from gridloop.brokers import free_port
from gridloop.db import Database
from gridloop.procs import spawn, tail, terminate
from gridloop.settings import REPO_ROOT
from gridloop.topics import ensure_topics
from schemas import codes
from schemas.events import Location, ReportSubmitted, make_event
from schemas.reference import Jurisdiction, load_jurisdiction
from services.router.models import PLUMBING, Base, OpenCase, RouteDecision
from tests.support.stacks import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
J: Jurisdiction = load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")
TOTAL = 1000
_M_PER_DEG = 111_320.0

# exact shared corners: reports around them straddle grids (and so partitions)
CORNERS = [
    (31.329, 121.519),
    (31.3296, 121.532),
    (31.322, 121.5245),
    (31.3064, 121.445),
    (31.2982, 121.4547),
    (31.3067, 121.4543),
    (31.3293, 121.525),
]


@dataclass
class Plan:
    """The reports to send and what must come of them."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)  # (key, event json)
    clusters: dict[str, set[str]] = field(default_factory=dict)  # cluster id -> report ids
    common: dict[str, bool] = field(default_factory=dict)  # cluster id -> expected 共性问题
    triage: set[str] = field(default_factory=set)  # reports that must each be a triage case


def _well_inside(lat: float, lon: float, margin_m: float = 25.0) -> bool:
    """In a grid, and so are points a GPS jitter away (outside the street is triage, not a merge)."""
    d = margin_m / _M_PER_DEG
    return all(J.grid_at(lat + a * d, lon + b * d) is not None for a in (-1, 0, 1) for b in (-1, 0, 1))


def _spots(rng: random.Random) -> list[tuple[float, float]]:
    """Points in every grid of both streets, 250 m apart or more, the shared corners included."""
    spots = list(CORNERS)
    assert all(_well_inside(lat, lon) for lat, lon in spots)
    lat = 31.2885
    while lat < 31.347:
        lon = 121.4335
        while lon < 121.549:
            far = all(abs(lat - a) > 0.0024 or abs(lon - b) > 0.0027 for a, b in spots)
            if far and _well_inside(lat, lon):
                spots.append((lat, lon))
            lon += 0.0028
        lat += 0.0025
    rng.shuffle(spots)
    return spots


def plan_reports(seed: int = 20261124) -> Plan:
    """1,000 reports: clusters of 1-5 at (spot, category), plus triage cases that never merge."""
    rng = random.Random(seed)
    spots = _spots(rng)
    assert {g.id for g in (J.grid_at(a, b) for a, b in spots) if g} == set(J.grids)  # all 14 grids
    plan = Plan()
    base = datetime.now(UTC) - timedelta(hours=1)
    categories = sorted(J.categories)
    pairs = [(s, c) for s in range(len(spots)) for c in categories]
    rng.shuffle(pairs)
    n = 0

    def add(report_id: str, key: str, data: ReportSubmitted) -> None:
        event = make_event(
            "report.submitted", data, source="reporter", subject=report_id, time=data.submitted_at
        )
        plan.messages.append((key, event.model_dump_json().encode()))

    for i in range(40):  # triage: 20 outside both streets by GPS, 20 of an unknown category
        rid = f"tri-{i}"
        if i < 20:
            lat, lon, category = 31.36 + i * 0.003, 121.50, "manhole_cover"
        else:
            lat, lon, category = spots[i][0], spots[i][1], "ufo_landing"
        data = ReportSubmitted(
            report_id=rid,
            channel="manual",
            category=category,
            location=Location(lat=lat, lon=lon),
            rider_ref=f"rider-{rid}",
            submitted_at=base + timedelta(seconds=n),
        )
        add(rid, "none", data)
        plan.triage.add(rid)
        n += 1
    for cluster_no, (spot_no, category) in enumerate(pairs):
        if n >= TOTAL:
            break
        lat0, lon0 = spots[spot_no]
        grid = J.grid_at(lat0, lon0)
        assert grid is not None
        code = codes.new_code(rng)
        radius = J.categories[category].dup_radius_m
        size = min(rng.choice([1, 1, 2, 3, 3, 4, 5]), TOTAL - n)
        cluster = f"k{cluster_no}"
        riders = [
            rng.choice([f"{cluster}-a", f"{cluster}-b", f"{cluster}-c", f"{cluster}-d", None])
            for _ in range(size)
        ]
        plan.clusters[cluster] = set()
        plan.common[cluster] = len({r for r in riders if r}) >= 3
        for m, rider in enumerate(riders):
            rid = f"{cluster}-{m}"
            at = base + timedelta(seconds=n)
            if rng.random() < 0.5:  # scanned the spot's code: place, grid, the place's point
                data = ReportSubmitted(
                    report_id=rid,
                    channel="scan",
                    category=category,
                    code=code,
                    place_id=f"spot{spot_no}",
                    place_name=f"测试点{spot_no}",
                    grid_id=grid.id,
                    location=Location(lat=lat0, lon=lon0),
                    rider_ref=rider,
                    submitted_at=at,
                )
                key = grid.id
            else:  # GPS a few metres off: no grid yet, key "none" (another partition)
                jitter = radius / 5 / _M_PER_DEG
                data = ReportSubmitted(
                    report_id=rid,
                    channel="manual",
                    category=category,
                    location=Location(
                        lat=lat0 + rng.uniform(-jitter, jitter), lon=lon0 + rng.uniform(-jitter, jitter)
                    ),
                    rider_ref=rider,
                    danger_now=rng.random() < 0.1,
                    submitted_at=at,
                )
                key = "none"
            add(rid, key, data)
            plan.clusters[cluster].add(rid)
            n += 1
    assert n == TOTAL
    rng.shuffle(plan.messages)  # arrival order unlike submission order, clusters interleaved
    return plan


@dataclass
class Routers:
    """Router processes sharing one database and one consumer group."""

    url: str
    bootstrap: str
    prefix: str
    var_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def start(self, name: str) -> None:
        """Start one router process."""
        self.ports[name] = free_port()
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "DATABASE_URL": self.url,
                "GRIDLOOP_VAR_DIR": str(self.var_dir),
                "GRIDLOOP_ROUTER_PORT": str(self.ports[name]),
                "GRIDLOOP_TOPIC_PREFIX": self.prefix,
                "GRIDLOOP_SESSION_TIMEOUT_MS": "6000",
                "GRIDLOOP_CONSUMER_MAX_RECORDS": "100",
                "PYTHONUNBUFFERED": "1",
            }
        )
        cmd = [sys.executable, "-m", "gridloop.cli", "router"]
        self.procs[name] = spawn(cmd, self.log(name), cwd=REPO_ROOT, env=env)

    def log(self, name: str) -> Path:
        """One router's log file."""
        return self.var_dir / "logs" / f"{name}.log"

    def url_of(self, name: str) -> str:
        """One router's base URL."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def wait_ready(self, name: str) -> None:
        """Until the router answers /readyz (database and broker)."""

        def ready() -> bool:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{tail(self.log(name), 30)}")
            return httpx.get(self.url_of(name) + "/readyz", timeout=2).status_code == 200

        wait_for(ready, timeout=60, every=0.2, what=f"{name} ready")

    def decided_by(self, name: str) -> float:
        """Decisions this process made, from its /metrics."""
        total = 0.0
        for line in httpx.get(self.url_of(name) + "/metrics", timeout=5).text.splitlines():
            if line.startswith("gridloop_route_decisions_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self, name: str) -> None:
        """kill -9 one router."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        """Stop every router still running."""
        terminate(list(self.procs.values()), timeout=15)
        self.procs.clear()


@pytest.fixture
def routers(kafka_bootstrap: str, topic_prefix: str, db_url: str, tmp_path: Path) -> Iterator[Routers]:
    """Topics, a migrated router database, and two router processes in one group, both ready."""
    ensure_topics(kafka_bootstrap, partitions=6, prefix=topic_prefix)
    migrate.upgrade("router", db_url)
    r = Routers(db_url, kafka_bootstrap, topic_prefix, tmp_path)
    try:
        r.start("router-a")
        r.start("router-b")
        r.wait_ready("router-a")
        r.wait_ready("router-b")
        yield r
    finally:
        r.stop()


def publish(bootstrap: str, topic: str, messages: list[tuple[str, bytes]], per_second: float) -> None:
    """Send messages at a steady rate (the reporter's relay would send them as riders report)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        started = time.monotonic()
        for i, (key, value) in enumerate(messages):
            producer.send(topic, key=key.encode(), value=value)
            ahead = i / per_second - (time.monotonic() - started)
            if ahead > 0.05:
                producer.flush()
                time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()


def decided(db: Database) -> int:
    """Decisions in the router's database."""
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(RouteDecision)).scalar_one())


def unsent(db: Database) -> int:
    """Outbox rows the routers' relay has not sent yet."""
    with db.engine.connect() as conn:
        table = PLUMBING.outbox
        return int(
            conn.execute(
                select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
            ).scalar_one()
        )


async def _read_routed(
    bootstrap: str, topic: str, want: set[str], wait: float
) -> dict[str, list[tuple[str, str, str]]]:
    """Read `reports.routed` from the start until every wanted report has an event, then on to the
    end offsets (so a copy sent after the first is counted too)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    try:
        deadline = time.monotonic() + wait
        while not want <= set(seen) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    event = json.loads(rec.value)
                    key = rec.key.decode() if rec.key else ""
                    seen[event["data"]["report_id"]].append((event["id"], event["data"]["case_id"], key))
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            assert time.monotonic() < deadline + 30, "reports.routed not read to its end"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    event = json.loads(rec.value)
                    key = rec.key.decode() if rec.key else ""
                    seen[event["data"]["report_id"]].append((event["id"], event["data"]["case_id"], key))
    finally:
        await consumer.stop()
    return seen


def check_outcome(plan: Plan, db: Database, bootstrap: str, prefix: str) -> None:
    """Exactly the planned cases: every report once, every cluster one case, triage alone, 共性问题 right."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(col(RouteDecision.report_id), col(RouteDecision.case_id), col(RouteDecision.decision))
        ).all()
        cases = {
            r.case_id: r
            for r in conn.execute(
                select(col(OpenCase.case_id), col(OpenCase.common_issue), col(OpenCase.triage))
            )
        }
    case_of = {r.report_id: r.case_id for r in rows}
    decision = {r.report_id: r.decision for r in rows}
    everyone = set().union(*plan.clusters.values()) | plan.triage
    assert len(rows) == TOTAL and set(case_of) == everyone  # none lost, none decided twice (primary key)
    for cluster, members in plan.clusters.items():
        assert len({case_of[m] for m in members}) == 1, f"cluster {cluster} split: {sorted(members)}"
        assert sorted(decision[m] for m in members) == sorted(["open"] + ["merge"] * (len(members) - 1)), (
            cluster
        )
        assert cases[case_of[next(iter(members))]].common_issue is plan.common[cluster], cluster
    cluster_cases = [case_of[next(iter(m))] for m in plan.clusters.values()]
    assert len(set(cluster_cases)) == len(plan.clusters)  # no two clusters share a case
    assert all(decision[t] == "triage" and cases[case_of[t]].triage for t in plan.triage)
    assert len({case_of[t] for t in plan.triage}) == len(plan.triage)
    assert len(cases) == len(plan.clusters) + len(plan.triage)  # not one case more
    assert any(plan.common.values()) and not all(plan.common.values())

    wait_for(lambda: unsent(db) == 0, timeout=60, every=0.2, what="the routers' outboxes drained")
    routed = asyncio.run(_read_routed(bootstrap, prefix + "reports.routed", everyone, wait=60))
    assert set(routed) == everyone
    for report_id, copies in routed.items():
        # one relay per database (gridloop.leader): each decision on the topic exactly once, by its case
        assert len(copies) == 1, (report_id, copies)
        assert [key for _, _, key in copies] == [case_of[report_id]]
    assert sum(len(copies) for copies in routed.values()) == TOTAL


def test_two_routers_route_1000_reports_exactly(
    routers: Routers, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Two routers in one group share 1,000 reports; the cases are exactly the planned ones."""
    plan = plan_reports()
    db = Database(routers.url, Base.metadata)
    try:
        publish(kafka_bootstrap, topic_prefix + "reports.submitted", plan.messages, per_second=150)
        wait_for(lambda: decided(db) >= TOTAL, timeout=90, every=0.5, what="1,000 decisions")
        check_outcome(plan, db, kafka_bootstrap, topic_prefix)
        shares = {name: routers.decided_by(name) for name in ("router-a", "router-b")}
        assert all(shares.values()), shares  # both did part of the work
    finally:
        db.dispose()


def test_one_router_killed_halfway_loses_and_doubles_nothing(
    routers: Routers, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """kill -9 one router once half the reports are decided: the other takes over; same exact outcome."""
    plan = plan_reports(seed=7)
    db = Database(routers.url, Base.metadata)
    sender = threading.Thread(
        target=publish, args=(kafka_bootstrap, topic_prefix + "reports.submitted", plan.messages, 100)
    )
    try:
        sender.start()

        def halfway_with_a_working() -> bool:
            return decided(db) >= TOTAL // 2 and routers.decided_by("router-a") > 0

        wait_for(halfway_with_a_working, timeout=90, every=0.05, what="half decided, router-a working")
        routers.kill("router-a")
        at_kill = decided(db)
        sender.join(timeout=60)
        assert at_kill < TOTAL, "the kill came too late to matter"
        wait_for(lambda: decided(db) >= TOTAL, timeout=90, every=0.5, what="1,000 decisions after the kill")
        check_outcome(plan, db, kafka_bootstrap, topic_prefix)
    finally:
        sender.join(timeout=60)
        db.dispose()
