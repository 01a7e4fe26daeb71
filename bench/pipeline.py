"""End-to-end pipeline benchmark, with this machine's ceilings measured in the same run.

    python -m bench.pipeline                      # Apache Kafka, SQLite, rates 50 … 1000
    python -m bench.pipeline --broker tansu       # the embedded fallback broker
    python -m bench.pipeline --database postgres  # a PostgreSQL database per service, as in production
    python -m bench.pipeline --rates 200 --step-seconds 10 --profile 200

Starts its own broker and the three services (SQLite, as `gridloop up` does), drives riders over HTTP
at rising rates, and reports accepted reports/s, errors, report-to-queue latency (p50/p95/p99, from
the closer's histogram: accepted → case committed in the station queue), the end-to-end rate
including the time to drain, and the CPU of every process. Ceilings: raw aiokafka produce and
consume, a one-hop FastStream consume-and-publish, and a bare FastAPI POST. Prints a table and
writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.loadgen import run_load
from gridloop.brokers import KafkaCluster, TansuBroker, free_port
from gridloop.cli import load_demo
from gridloop.demo import DEMO_PLACES
from gridloop.procs import spawn, terminate
from gridloop.stack import Stack, isolated_settings
from gridloop.topics import ensure_topics
from schemas.reference import load_places

RESULTS = Path(__file__).parent / "results"
Buckets = list[tuple[float, float]]
"""A histogram's cumulative buckets: [(le, count)], sorted by le."""
PAYLOAD = b"x" * 700  # about the size of a report.submitted envelope
BENCH_ENV = {
    "GRIDLOOP_LOG_LEVEL": "WARNING",
    # the benchmark is one address sending hundreds of reports a second over 28 codes
    "GRIDLOOP_RATE_PER_CODE": "0",
    "GRIDLOOP_RATE_PER_RIDER": "0",
    "GRIDLOOP_RATE_PER_ADDRESS": "0",
    "GRIDLOOP_RATE_NEW_RIDERS_PER_ADDRESS": "0",
}
"""The services' environment in a benchmark: quiet logs, no rate limits."""


@dataclass
class Step:
    """One offered rate."""

    offered_per_s: float
    seconds: float
    accepted: int
    errors: dict[str, int]
    accepted_per_s: float
    drain_seconds: float
    end_to_end_per_s: float
    post_p50_ms: float
    post_p99_ms: float
    queue_p50_ms: float
    queue_p95_ms: float
    queue_p99_ms: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_report: dict[str, float] = field(default_factory=dict)
    profile: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float]:
    """Cumulative buckets [(le, count)] and the count of a Prometheus histogram in exposition text."""
    buckets = []
    for le, value in re.findall(rf'{name}_bucket\{{le="([^"]+)"\}} (\S+)', text):
        buckets.append((float("inf") if le == "+Inf" else float(le), float(value)))
    count = re.search(rf"^{name}_count (\S+)$", text, re.M)
    return sorted(buckets), float(count.group(1)) if count else 0.0


def quantile(q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """histogram_quantile over the difference of two scrapes (linear inside a bucket)."""
    prev = dict(before)
    delta = [(le, c - prev.get(le, 0.0)) for le, c in after]
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return 0.0
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if le == float("inf"):
                return lower_le
            return lower_le + (le - lower_le) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_le, lower_count = le, count
    return lower_le


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) per named process group; children count except for this process."""
    out: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                proc = psutil.Process(pid)
                # this process started the services and the broker: they are measured on their own
                procs = [proc] if pid == os.getpid() else [proc, *proc.children(recursive=True)]
                for p in procs:
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                continue
        out[name] = total
    return out


# ---------------------------------------------------------------------------------------- ceilings


async def ceiling_aiokafka(bootstrap: str, n: int) -> dict[str, float]:
    """Raw aiokafka: produce n messages (acks=all), then consume them."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"bench.raw.{uuid.uuid4().hex[:6]}"
    ensure_topics_raw(bootstrap, [topic])
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    start = time.perf_counter()
    futures = [await producer.send(topic, PAYLOAD, key=str(i % 64).encode()) for i in range(n)]
    await asyncio.gather(*futures)
    produce_s = time.perf_counter() - start
    await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    got = 0
    start = time.perf_counter()
    while got < n:
        batch = await consumer.getmany(timeout_ms=500, max_records=5000)
        got += sum(len(v) for v in batch.values())
    consume_s = time.perf_counter() - start
    await consumer.stop()
    return {"aiokafka_produce_per_s": n / produce_s, "aiokafka_consume_per_s": n / consume_s}


def ensure_topics_raw(bootstrap: str, topics: list[str], partitions: int = 6) -> None:
    """Create bench topics."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        admin.close()
    time.sleep(1.0)


async def ceiling_faststream_hop(bootstrap: str, n: int) -> dict[str, float]:
    """One hop through FastStream: consume each message from A and publish it to B (awaited)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker

    a, b = f"bench.hop.a.{uuid.uuid4().hex[:6]}", f"bench.hop.b.{uuid.uuid4().hex[:6]}"
    ensure_topics_raw(bootstrap, [a, b])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    await asyncio.gather(*[await producer.send(a, PAYLOAD, key=str(i % 64).encode()) for i in range(n)])
    await producer.stop()
    # logging every message would measure the logger, not the hop
    broker = KafkaBroker(bootstrap, acks="all", logger=None)

    @broker.subscriber(
        a, group_id="bench-hop", auto_offset_reset="earliest", ack_policy=AckPolicy.ACK, fetch_max_wait_ms=50
    )
    async def hop(body: bytes) -> None:
        await broker.publish(body, b)

    consumer = AIOKafkaConsumer(
        b,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    start = time.perf_counter()
    await broker.start()
    got = 0
    first = None
    while got < n:
        batch = await consumer.getmany(timeout_ms=500, max_records=5000)
        count = sum(len(v) for v in batch.values())
        if count and first is None:
            first = time.perf_counter()
        got += count
        if time.perf_counter() - start > 300:
            break
    end = time.perf_counter()
    await broker.stop()
    await consumer.stop()
    return {
        "faststream_one_hop_per_s": got / (end - (first or start)),
        "faststream_one_hop_incl_join_per_s": got / (end - start),
    }


async def ceiling_bare_fastapi(seconds: float) -> dict[str, float]:
    """A bare FastAPI POST under uvicorn (uvloop, httptools), closed loop."""
    port = free_port()
    log = Path(tempfile.gettempdir()) / "gridloop-bench-bare.log"
    proc = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        log,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        for _ in range(100):
            try:
                httpx.post(f"http://127.0.0.1:{port}/api/v1/reports", json={"code": "x", "category": "y"})
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        result = await run_load(
            f"http://127.0.0.1:{port}/api/v1/reports",
            lambda i: {"code": "W7Q23QVD", "category": "sanitation", "description": "x" * 40},
            None,
            seconds,
            connections=32,
            idempotency=False,
        )
        cpu = cpu_of({"bare": [proc.pid]})["bare"]
    finally:
        terminate([proc], timeout=5)
    return {
        "bare_fastapi_post_per_s": result.ok() / result.seconds,
        "bare_fastapi_p99_ms": result.percentile(0.99) * 1000,
        "bare_fastapi_cpu_s": cpu,
    }


# ---------------------------------------------------------------------------------------- pipeline


def postgres_databases() -> dict[str, str]:
    """A PostgreSQL database of its own for each service, on one server (as production runs them)."""
    from bench.queue import server_url
    from gridloop.db import create_database
    from gridloop.settings import SERVICES

    server = server_url()
    return {service: create_database(server, f"bench_{service}_") for service in SERVICES}


def postgres_pids() -> list[int]:
    """The PostgreSQL server processes on this machine (their backends count as their children)."""
    return [
        p.pid
        for p in psutil.process_iter(["name", "ppid"])
        if p.info["name"] == "postgres" and psutil.Process(p.info["ppid"]).name() != "postgres"
    ]


def sum_histograms(parts: list[tuple[Buckets, float]]) -> tuple[Buckets, float]:
    """One histogram from several processes' (buckets, count): each bucket and the count summed, as
    Prometheus' sum() over replicas does."""
    totals: dict[float, float] = {}
    for buckets, _ in parts:
        for le, count in buckets:
            totals[le] = totals.get(le, 0.0) + count
    return sorted(totals.items()), sum(count for _, count in parts)


def queue_histogram(stack: Stack) -> tuple[Buckets, float]:
    """Report→queue over every closer replica, each scraped directly (the entry would answer for one
    replica at random)."""
    texts = [
        httpx.get(stack.replica_url("closer", i) + "/metrics", timeout=10).text
        for i in range(stack.replica_count("closer"))
    ]
    return sum_histograms([histogram(text, "gridloop_report_to_queue_seconds") for text in texts])


_ROOT_FRAMES = {
    "Thread._bootstrap",
    "Thread._bootstrap_inner",
    "Thread.run",
    "_worker",
    "_WorkItem.run",
    "_run_module_as_main",
    "_run_code",
    "<module>",
    "main",
    "cmd_service",
    "run",
    "Server.run",
    "asyncio_run",
    "Runner.run",
}


def start_profiles(
    pids: dict[str, list[int]], seconds: float, out: Path
) -> dict[str, subprocess.Popen[bytes]]:
    """py-spy on each service for `seconds` (samples taken only while a thread holds the GIL)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("  (py-spy not installed: no profile; pip install py-spy)", flush=True)
        return {}
    out.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name in ("reporter", "router", "closer"):
        cmd = [spy, "record", "--gil", "--nonblocking", "-r", "100", "-d", str(max(int(seconds), 1))]
        cmd += ["-f", "raw", "-o", str(out / f"{name}.txt"), "-p", str(pids[name][0])]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return procs


def profile_summary(path: Path, top: int = 14) -> list[tuple[str, float]]:
    """The functions with the largest inclusive share of a py-spy raw (collapsed stacks) profile."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        names = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            if name in _ROOT_FRAMES:
                continue
            names.add(f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]}")
        for name in names:
            inclusive[name] += n
    return [(name, n / total) for name, n in inclusive.most_common(top)] if total else []


async def pipeline_step(
    stack: Stack, rate: float, seconds: float, pids: dict[str, list[int]], profile_dir: Path | None = None
) -> Step:
    """Offer `rate` reports/s for `seconds`, then wait for the pipeline to drain (profiling the services
    while the load runs when given a directory)."""
    places = load_places(DEMO_PLACES)
    categories = ("sanitation", "shared_bikes", "fire_lane_blocked", "ebike_flying_wire", "other")

    def body(i: int) -> dict[str, object]:
        place = places[i % len(places)]
        return {
            "code": place.code,
            "category": categories[(i // len(places)) % len(categories)],
            "description": f"bench {i}",
        }

    before_buckets, before_count = queue_histogram(stack)
    cpu_before = cpu_of(pids)
    spies = start_profiles(pids, seconds - 1, profile_dir) if profile_dir else {}
    start = time.perf_counter()
    result = await run_load(stack.url("reporter") + "/api/v1/reports", body, rate, seconds, connections=64)
    load_end = time.perf_counter()
    accepted = result.ok()
    target = before_count + accepted
    deadline = time.perf_counter() + 120
    after_buckets, after_count = queue_histogram(stack)
    while after_count < target and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
        after_buckets, after_count = queue_histogram(stack)
    end = time.perf_counter()
    cpu_after = cpu_of(pids)
    profiles = {}
    for name, spy in spies.items():
        spy.wait(timeout=60)
        assert profile_dir is not None
        if (profile_dir / f"{name}.txt").exists():
            profiles[name] = profile_summary(profile_dir / f"{name}.txt")
    return Step(
        offered_per_s=rate,
        seconds=round(load_end - start, 2),
        accepted=accepted,
        errors={**{str(k): v for k, v in result.statuses.items() if k != 202}, **result.errors},
        accepted_per_s=round(accepted / (load_end - start), 1),
        drain_seconds=round(end - load_end, 2),
        end_to_end_per_s=round(accepted / (end - start), 1),
        post_p50_ms=round(result.percentile(0.5) * 1000, 1),
        post_p99_ms=round(result.percentile(0.99) * 1000, 1),
        queue_p50_ms=round(quantile(0.5, before_buckets, after_buckets) * 1000, 1),
        queue_p95_ms=round(quantile(0.95, before_buckets, after_buckets) * 1000, 1),
        queue_p99_ms=round(quantile(0.99, before_buckets, after_buckets) * 1000, 1),
        cpu_seconds={k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after},
        cpu_ms_per_report={
            k: round((cpu_after[k] - cpu_before.get(k, 0.0)) / max(accepted, 1) * 1000, 3) for k in cpu_after
        },
        profile=profiles,
    )


def commit() -> str:
    """The short commit of the benchmark's checkout."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()


def machine() -> str:
    """Architecture, cores, memory and Python of this machine."""
    return (
        f"{platform.machine()} {psutil.cpu_count()} cores "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )


def print_table(meta: dict[str, Any], ceilings: dict[str, float], steps: list[Step]) -> None:
    """The human-readable summary."""
    print(f"\nGridLoop pipeline benchmark — {meta['date']} — {meta['machine']} — commit {meta['commit']}")
    print(f"broker: {meta['broker']}, databases: {meta['database']}\n\nceilings (same run, same machine):")
    for k, v in ceilings.items():
        print(f"  {k:38} {v:10.1f}")
    hop = ceilings.get("faststream_one_hop_per_s", 0.0)
    print(
        "\n offered  accepted/s  e2e/s  drain s  errors  POST p50/p99 ms  queue p50/p95/p99 ms  e2e/hop  "
        "CPU s (reporter router closer broker loadgen"
        + (" postgres)" if any("postgres" in s.cpu_seconds for s in steps) else ")")
    )
    for s in steps:
        cpu = s.cpu_seconds
        errs = sum(s.errors.values())
        print(
            f" {s.offered_per_s:7.0f} {s.accepted_per_s:11.1f} {s.end_to_end_per_s:6.1f}"
            f" {s.drain_seconds:8.2f} {errs:7d}  {s.post_p50_ms:6.1f}/{s.post_p99_ms:<7.1f}"
            f"  {s.queue_p50_ms:6.0f}/{s.queue_p95_ms:5.0f}/"
            f"{s.queue_p99_ms:<6.0f}  {s.end_to_end_per_s / hop if hop else 0:7.2f}  "
            f"{cpu.get('reporter', 0):5.1f} {cpu.get('router', 0):5.1f} {cpu.get('closer', 0):5.1f} "
            f"{cpu.get('broker', 0):5.1f} {cpu.get('loadgen', 0):5.1f}"
            + (f" {cpu['postgres']:5.1f}" if "postgres" in cpu else "")
        )
    names: tuple[str, ...] = ("reporter", "router", "closer", "broker", "loadgen")
    if any("postgres" in s.cpu_ms_per_report for s in steps):
        names += ("postgres",)
    print(f"\n offered  CPU ms per accepted report: {' '.join(names)}  all")
    for s in steps:
        per = s.cpu_ms_per_report
        cells = " ".join(f"{per.get(n, 0):6.2f}" for n in names)
        print(f" {s.offered_per_s:7.0f}  {' ' * 34}{cells} {sum(per.get(n, 0) for n in names):5.2f}")
    for s in steps:
        for service, top in s.profile.items():
            print(
                f"\n profile of {service} at {s.offered_per_s:.0f}/s (share of the samples holding the GIL):"
            )
            for name, share in top:
                print(f"   {share * 100:5.1f}%  {name}")
    verdict = against_targets(ceilings, steps)
    print("\nagainst the targets:")
    for line in verdict["lines"]:
        print(f"  {line}")


def sustained(steps: list[Step]) -> Step | None:
    """The highest offered rate the pipeline kept up with: ≥ 98 % of it accepted, no errors, and every
    accepted report in its queue within 2 s of the load ending with a p99 under 5 s (no backlog left).

    The end-to-end rate of a short step counts that drain too, so it is a little below the offered
    rate even when nothing queues up."""
    kept = [
        s
        for s in steps
        if s.accepted_per_s >= 0.98 * s.offered_per_s
        and not s.errors
        and s.drain_seconds <= 2.0
        and s.queue_p99_ms < 5000
    ]
    return max(kept, key=lambda s: s.offered_per_s, default=None)


def against_targets(ceilings: dict[str, float], steps: list[Step]) -> dict[str, Any]:
    """The issue's targets, measured: sustained rate, p99 at 200/s, end to end against the hop ceiling."""
    best = sustained(steps)
    peak = max(steps, key=lambda s: s.end_to_end_per_s, default=None)
    at_200 = next((s for s in steps if s.offered_per_s == 200), None)
    hop = ceilings.get("faststream_one_hop_per_s")
    lines = [
        f"sustained end to end: {best.end_to_end_per_s:.0f} reports/s (offered {best.offered_per_s:.0f})"
        if best
        else "sustained end to end: none of the rates",
        f"peak end to end: {peak.end_to_end_per_s:.0f} reports/s (offered {peak.offered_per_s:.0f})"
        if peak
        else "",
        f"p99 report→queue at 200/s: {at_200.queue_p99_ms:.0f} ms"
        if at_200
        else "p99 at 200/s: not measured",
    ]
    if hop and peak:
        lines.append(f"peak end to end ÷ one-hop FastStream ceiling: {peak.end_to_end_per_s / hop:.2f}")
    bare = ceilings.get("bare_fastapi_post_per_s")
    if bare and peak:
        lines.append(f"peak intake ÷ bare FastAPI POST: {peak.accepted_per_s / bare:.2f}")
    return {
        "sustained_per_s": best.end_to_end_per_s if best else 0.0,
        "peak_per_s": peak.end_to_end_per_s if peak else 0.0,
        "p99_at_200_ms": at_200.queue_p99_ms if at_200 else None,
        "peak_over_hop": peak.end_to_end_per_s / hop if hop and peak else None,
        "lines": [line for line in lines if line],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run the ceilings and the pipeline steps; return everything measured."""
    work = Path(tempfile.mkdtemp(prefix="gridloop-bench-"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    broker: KafkaCluster | TansuBroker
    if args.broker == "kafka":
        broker = KafkaCluster(work / "kafka", brokers=1, log_dir=work / "logs", heap="1g")
    else:
        broker = TansuBroker(port=free_port(), log_path=work / "logs" / "tansu.log")
    broker.start()
    try:
        bootstrap = broker.bootstrap_servers
        ceilings: dict[str, float] = {}
        if not args.skip_ceilings:
            print("measuring ceilings …", flush=True)
            ceilings |= await ceiling_aiokafka(bootstrap, args.ceiling_messages)
            ceilings |= await ceiling_faststream_hop(bootstrap, args.hop_messages)
            ceilings |= await ceiling_bare_fastapi(args.step_seconds)
        databases: dict[str, str] = {}
        if args.database == "postgres":
            databases = postgres_databases()
        settings = isolated_settings(
            work / "var",
            bootstrap,
            "",
            topic_partitions=args.partitions,
            **{f"{service}_database_url": url for service, url in databases.items()},
        )
        ensure_topics(bootstrap, args.partitions)
        stack = Stack(
            settings=settings,
            broker="external",
            demo=load_demo,
            extra_env=BENCH_ENV,
        )
        stack.start()
        try:
            broker_pids = broker.pids() if isinstance(broker, KafkaCluster) else [broker._proc.pid]  # type: ignore[union-attr]
            pids = {name: [proc.pid] for name, proc in stack.procs.items()}
            pids["broker"] = broker_pids
            pids["loadgen"] = [os.getpid()]
            if databases:
                pids["postgres"] = postgres_pids()
            steps = []
            for rate in args.rates:
                print(f"offering {rate}/s for {args.step_seconds}s …", flush=True)
                where = RESULTS / f"profile-{stamp}-{rate:.0f}" if rate in args.profile else None
                steps.append(await pipeline_step(stack, rate, args.step_seconds, pids, where))
        finally:
            stack.stop()
    finally:
        broker.stop()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit(),
        "broker": args.broker,
        "database": args.database,
        "machine": machine(),
        "step_seconds": args.step_seconds,
        "partitions": args.partitions,
    }
    print_table(meta, ceilings, steps)
    return {
        "meta": meta,
        "ceilings": ceilings,
        "steps": [asdict(s) for s in steps],
        "targets": {k: v for k, v in against_targets(ceilings, steps).items() if k != "lines"},
    }


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="SQLite files as `gridloop up` runs (default), or a PostgreSQL database per service as in "
        "production (GRIDLOOP_BENCH_POSTGRES_URL, else an embedded server)",
    )
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[50.0, 100.0, 200.0, 500.0, 700.0, 1000.0],
    )
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--ceiling-messages", type=int, default=50_000)
    parser.add_argument("--hop-messages", type=int, default=10_000)
    parser.add_argument("--skip-ceilings", action="store_true")
    parser.add_argument(
        "--profile",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[],
        help="rates at which to profile the three services with py-spy (e.g. --profile 500)",
    )
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"pipeline-{args.broker}-{args.database}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
