"""Scale-out benchmark: the production shape on one machine with 1 and with 2 routers and closers.

    python -m bench.scaleout                              # 1 then 2 replicas, rates 50,100,150, 20 s
    python -m bench.scaleout --routers 2 --rates 100 --step-seconds 10

Each shape is started fresh by `gridloop.stack.Stack`, as `gridloop up --brokers 3 --database postgres
--replicas 2` starts it: three KRaft brokers (topics RF 3, min.insync.replicas 2), embedded
PostgreSQL with a database per service, two reporters, and the entry proxy in front of every
service. The shapes differ only in the router and closer replica count (`Stack.replicas_of`).
After a short warm-up (consumer groups joined, discarded), each rate runs `bench.pipeline.pipeline_step`:
accepted and end-to-end reports/s, report→queue p50/p99 summed over the closers, and the CPU of every
process per report (each replica, each broker, PostgreSQL with its backends, the proxy, this load
generator). Every router and closer replica is also scraped directly, before and after each step:
the routing lock's wait (`gridloop_route_lock_wait_seconds`, one observation per batch), its route
decisions and the events it applied (`bench.replica_work`). Prints the tables and the ratios (2
replicas against 1) and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.pipeline import BENCH_ENV, RESULTS, Step, commit, machine, pipeline_step
from bench.replica_work import Work, step_work, wait_p99_ms, wait_per_batch_ms, work_of
from gridloop.cli import load_demo
from gridloop.settings import SERVICES
from gridloop.stack import PROXY, Stack, isolated_settings

SCALED = ("router", "closer")
"""The services whose replica count the two shapes compare."""
WARMUP_RATE, WARMUP_SECONDS = 50.0, 5.0


@dataclass
class ScaleStep:
    """One offered rate on one shape: the pipeline step and each scaled replica's work in it."""

    step: Step
    work: dict[str, Work] = field(default_factory=dict)


@dataclass
class ShapeRun:
    """Every step of one shape."""

    replicas: int
    """Routers and closers (each)."""
    reporters: int
    load_average_at_start: tuple[float, float, float]
    startup_seconds: float
    steps: list[ScaleStep] = field(default_factory=list)
    load_average_at_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """1, 5 and 15 minute load averages: other work on the machine shows here."""


def process_pids(stack: Stack) -> dict[str, list[int]]:
    """Every process of the stack by name (each replica, each broker, PostgreSQL, the proxy) and this
    one, the load generator."""
    pids: dict[str, list[int]] = {}
    for service in SERVICES:
        for index in range(stack.replica_count(service)):
            pid = stack.replica_pid(service, index)
            pids[stack.proc_name(service, index)] = [pid] if pid else []
    assert stack.kafka is not None and stack.postgres is not None and stack.postgres.pid is not None
    for index in range(stack.kafka.brokers):
        pid = stack.kafka.node_pid(index)
        pids[f"broker-{index}"] = [pid] if pid else []
    # the postmaster; its backends count as its children (bench.pipeline.cpu_of)
    pids["postgres"] = [stack.postgres.pid]
    pids[PROXY] = [stack.procs[PROXY].pid]
    pids["loadgen"] = [os.getpid()]
    return pids


def scrape_replicas(stack: Stack) -> dict[str, Work]:
    """Each router and closer replica's counters, scraped on its own port (not through the entry)."""
    return {
        stack.proc_name(service, index): work_of(
            httpx.get(stack.replica_url(service, index) + "/metrics", timeout=10).text
        )
        for service in SCALED
        for index in range(stack.replica_count(service))
    }


def shape_stack(var_dir: Path, replicas: int, reporters: int, partitions: int) -> Stack:
    """The production shape with `replicas` routers and closers and `reporters` reporters."""
    settings = isolated_settings(var_dir, "", topic_partitions=partitions)
    return Stack(
        settings=settings,
        broker="kafka",
        brokers=3,
        database="postgres",
        replicas=reporters,
        replicas_of=dict.fromkeys(SCALED, replicas),
        demo=load_demo,
        extra_env=BENCH_ENV,
    )


async def run_shape(var_dir: Path, replicas: int, args: argparse.Namespace) -> ShapeRun:
    """Start one shape fresh, warm it up, run every rate, stop it."""
    load = os.getloadavg()
    print(
        f"\n{replicas} router(s) and closer(s), {args.reporters} reporters: starting "
        f"(load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}) …",
        flush=True,
    )
    stack = shape_stack(var_dir, replicas, args.reporters, args.partitions)
    started = time.perf_counter()
    stack.start()
    run = ShapeRun(replicas, args.reporters, load, round(time.perf_counter() - started, 1))
    try:
        pids = process_pids(stack)
        # the consumer groups join and the connections warm up: not measured
        await pipeline_step(stack, WARMUP_RATE, WARMUP_SECONDS, pids)
        for rate in args.rates:
            print(f"  offering {rate:.0f}/s for {args.step_seconds:.0f}s …", flush=True)
            before = scrape_replicas(stack)
            step = await pipeline_step(stack, rate, args.step_seconds, pids)
            after = scrape_replicas(stack)
            work = {name: step_work(before[name], after[name]) for name in after}
            run.steps.append(ScaleStep(step, work))
            run.load_average_at_end = os.getloadavg()
    finally:
        stack.stop()
    return run


def replicas_of(work: dict[str, Work], service: str) -> dict[str, Work]:
    """The replicas of one service in a step's work, by name."""
    return {name: w for name, w in work.items() if name.startswith(f"{service}-")}


def lock_wait_per_batch_ms(step: ScaleStep) -> float:
    """Lock wait per batch over every router of a step, in milliseconds."""
    routers = replicas_of(step.work, "router").values()
    total = Work(
        lock_wait_seconds=sum(w.lock_wait_seconds for w in routers),
        lock_waits=sum(w.lock_waits for w in routers),
    )
    return wait_per_batch_ms(total)


def cpu_ms_per_report(step: Step) -> float:
    """Every process's CPU per accepted report, in milliseconds."""
    return sum(step.cpu_ms_per_report.values())


def compare(one: ShapeRun, two: ShapeRun) -> list[dict[str, float]]:
    """For each rate both shapes ran: the second shape's figures over the first's, and the lock wait
    per batch of each."""
    rows = []
    theirs = {s.step.offered_per_s: s for s in two.steps}
    for mine in one.steps:
        other = theirs.get(mine.step.offered_per_s)
        if other is None:
            continue
        a, b = mine.step, other.step
        rows.append(
            {
                "offered_per_s": a.offered_per_s,
                "end_to_end_ratio": round(b.end_to_end_per_s / a.end_to_end_per_s, 3)
                if a.end_to_end_per_s
                else 0.0,
                "queue_p99_ratio": round(b.queue_p99_ms / a.queue_p99_ms, 3) if a.queue_p99_ms else 0.0,
                "cpu_per_report_ratio": round(cpu_ms_per_report(b) / cpu_ms_per_report(a), 3)
                if cpu_ms_per_report(a)
                else 0.0,
                "lock_wait_per_batch_ms_first": round(lock_wait_per_batch_ms(mine), 3),
                "lock_wait_per_batch_ms_second": round(lock_wait_per_batch_ms(other), 3),
            }
        )
    return rows


def print_tables(meta: dict[str, Any], runs: list[ShapeRun]) -> None:
    """The human-readable summary: throughput and latency, CPU per process, per-replica work, ratios."""
    print(f"\nGridLoop scale-out benchmark — {meta['date']} — {meta['machine']} — commit {meta['commit']}")
    print(
        f"3 KRaft brokers (RF 3, min ISR 2), embedded PostgreSQL, entry proxy, {meta['partitions']} "
        f"partitions, {meta['step_seconds']:.0f} s a step; load average at start {meta['load_average']}\n"
    )
    for run in runs:
        start, end = (
            " ".join(f"{x:.2f}" for x in v) for v in (run.load_average_at_start, run.load_average_at_end)
        )
        print(
            f" {run.replicas} replica(s): started in {run.startup_seconds:.0f} s,"
            f" load average {start} → {end}"
        )
    print("\n replicas  offered  accepted/s  e2e/s  drain s  errors  POST p99 ms  queue p50/p95/p99 ms")
    for run in runs:
        for s in (x.step for x in run.steps):
            print(
                f" {run.replicas:8d} {s.offered_per_s:8.0f} {s.accepted_per_s:11.1f}"
                f" {s.end_to_end_per_s:6.1f} {s.drain_seconds:8.2f} {sum(s.errors.values()):7d}"
                f" {s.post_p99_ms:12.1f}"
                f"  {s.queue_p50_ms:6.0f}/{s.queue_p95_ms:5.0f}/{s.queue_p99_ms:<6.0f}"
            )
    for run in runs:
        names = list(run.steps[0].step.cpu_ms_per_report) if run.steps else []
        print(f"\n {run.replicas} replica(s): CPU ms per accepted report")
        print(" offered " + " ".join(f"{n:>10}" for n in names) + "        all")
        for s in (x.step for x in run.steps):
            cells = " ".join(f"{s.cpu_ms_per_report.get(n, 0.0):10.2f}" for n in names)
            print(f" {s.offered_per_s:7.0f} {cells} {cpu_ms_per_report(s):10.2f}")
    print(
        "\n replicas  offered  replica    batches  lock wait s  per batch ms  p99 ms  decisions"
        "  events applied (duplicates)"
    )
    for run in runs:
        for scale in run.steps:
            for name, w in scale.work.items():
                applied = ", ".join(
                    f"{topic} {n:.0f} ({w.duplicates.get(topic, 0):.0f})"
                    for topic, n in sorted(w.consumed.items())
                )
                lock = (
                    f"{w.lock_waits:8.0f} {w.lock_wait_seconds:12.3f} {wait_per_batch_ms(w):13.3f}"
                    f" {wait_p99_ms(w):7.1f} {w.decisions:10.0f}"
                    if name.startswith("router-")
                    else " " * 53
                )
                print(f" {run.replicas:8d} {scale.step.offered_per_s:8.0f}  {name:9} {lock}  {applied}")
    if len(runs) == 2:
        print(f"\n {runs[1].replicas} replicas against {runs[0].replicas}:")
        print(" offered  e2e ratio  queue p99 ratio  CPU/report ratio  lock wait per batch ms (1 → 2)")
        for row in compare(runs[0], runs[1]):
            print(
                f" {row['offered_per_s']:7.0f} {row['end_to_end_ratio']:10.3f} {row['queue_p99_ratio']:16.3f}"
                f" {row['cpu_per_report_ratio']:17.3f}  {row['lock_wait_per_batch_ms_first']:.3f} → "
                f"{row['lock_wait_per_batch_ms_second']:.3f}"
            )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run each shape in turn; return everything measured."""
    work = Path(tempfile.mkdtemp(prefix="gridloop-scaleout-"))
    load, measured = os.getloadavg(), commit()
    runs = [await run_shape(work / f"replicas-{n}", n, args) for n in args.routers]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": measured,
        "machine": machine(),
        "load_average": " ".join(f"{x:.2f}" for x in load),
        "brokers": 3,
        "database": "postgres (embedded, a database per service)",
        "reporters": args.reporters,
        "partitions": args.partitions,
        "step_seconds": args.step_seconds,
        "rates": args.rates,
        "warmup": {"rate": WARMUP_RATE, "seconds": WARMUP_SECONDS},
    }
    print_tables(meta, runs)
    return {
        "meta": meta,
        "shapes": [asdict(run) for run in runs],
        "ratios": compare(runs[0], runs[1]) if len(runs) == 2 else [],
    }


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--routers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2],
        help="router and closer replica counts to compare, one shape each (default 1,2)",
    )
    parser.add_argument("--reporters", type=int, default=2, help="reporter replicas in every shape")
    parser.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[50.0, 100.0, 150.0]
    )
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    if args.reporters < 2:
        # with one process per service there is no entry proxy, and the shapes would differ in it
        parser.error("--reporters must be at least 2, so every shape runs behind the entry proxy")
    result = asyncio.run(main_async(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"scaleout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
