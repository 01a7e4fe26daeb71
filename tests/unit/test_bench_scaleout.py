"""The scale-out benchmark's pure parts: per-replica scrapes, summed histograms, the ratios; and the
load generator behind the entry proxy (a new connection after `Connection: close`)."""

from __future__ import annotations

import asyncio

import pytest

from bench.loadgen import run_load
from bench.pipeline import Step, histogram, quantile, sum_histograms
from bench.replica_work import Work, step_work, wait_p99_ms, wait_per_batch_ms, work_of
from bench.scaleout import ScaleStep, ShapeRun, compare, lock_wait_per_batch_ms, print_tables

# one router replica's /metrics as prometheus-client writes it (a few series of other metrics too)
ROUTER_SCRAPE = """\
# HELP gridloop_route_decisions_total Routing decisions.
# TYPE gridloop_route_decisions_total counter
gridloop_route_decisions_total{decision="open"} 5.0
gridloop_route_decisions_total{decision="merge"} 2.0
gridloop_route_decisions_total{decision="triage"} 1.0
# HELP gridloop_route_lock_wait_seconds Time a router batch waited for its areas' routing locks.
# TYPE gridloop_route_lock_wait_seconds histogram
gridloop_route_lock_wait_seconds_bucket{le="0.0005"} 1.0
gridloop_route_lock_wait_seconds_bucket{le="0.001"} 2.0
gridloop_route_lock_wait_seconds_bucket{le="0.01"} 2.0
gridloop_route_lock_wait_seconds_bucket{le="0.025"} 3.0
gridloop_route_lock_wait_seconds_bucket{le="+Inf"} 3.0
gridloop_route_lock_wait_seconds_count 3.0
gridloop_route_lock_wait_seconds_sum 0.0125
# HELP gridloop_route_duration_seconds Time to decide one report's route.
# TYPE gridloop_route_duration_seconds histogram
gridloop_route_duration_seconds_bucket{le="0.005"} 8.0
gridloop_route_duration_seconds_bucket{le="+Inf"} 8.0
gridloop_route_duration_seconds_count 8.0
gridloop_route_duration_seconds_sum 0.02
# HELP gridloop_events_consumed_total Events applied by a consumer (duplicates excluded).
# TYPE gridloop_events_consumed_total counter
gridloop_events_consumed_total{group="router",topic="reports.submitted"} 8.0
gridloop_events_consumed_total{group="router",topic="cases.events"} 4.0
# HELP gridloop_events_duplicate_total Redelivered events skipped by a consumer.
# TYPE gridloop_events_duplicate_total counter
gridloop_events_duplicate_total{group="router",topic="reports.submitted"} 1.0
"""


def test_work_of_reads_one_replicas_lock_wait_decisions_and_events() -> None:
    """Sum, count and buckets of the lock wait, decisions over every kind, events by topic."""
    work = work_of(ROUTER_SCRAPE)
    assert (work.lock_wait_seconds, work.lock_waits, work.decisions, work.decide_seconds) == (
        0.0125,
        3.0,
        8.0,
        0.02,
    )
    assert work.lock_wait_buckets == [
        (0.0005, 1.0),
        (0.001, 2.0),
        (0.01, 2.0),
        (0.025, 3.0),
        (float("inf"), 3.0),
    ]
    assert work.consumed == {"reports.submitted": 8.0, "cases.events": 4.0}
    assert work.duplicates == {"reports.submitted": 1.0}
    # a closer's scrape: no routing series at all
    closer = work_of('gridloop_events_consumed_total{group="closer",topic="reports.routed"} 7.0\n')
    assert closer == Work(consumed={"reports.routed": 7.0})


def test_step_work_is_the_difference_of_two_scrapes() -> None:
    """A step's work: every counter and bucket after minus before; the mean and p99 wait of the step."""
    before = work_of(ROUTER_SCRAPE)
    after = work_of(
        ROUTER_SCRAPE.replace('le="0.025"} 3.0', 'le="0.025"} 5.0')
        .replace('le="+Inf"} 3.0', 'le="+Inf"} 5.0')
        .replace("lock_wait_seconds_count 3.0", "lock_wait_seconds_count 5.0")
        .replace("lock_wait_seconds_sum 0.0125", "lock_wait_seconds_sum 0.0525")
        .replace('decision="open"} 5.0', 'decision="open"} 9.0')
        .replace('topic="reports.submitted"} 8.0', 'topic="reports.submitted"} 12.0')
        .replace("route_duration_seconds_sum 0.02", "route_duration_seconds_sum 0.05")
    )
    step = step_work(before, after)
    assert (step.lock_wait_seconds, step.lock_waits, step.decisions) == (pytest.approx(0.04), 2.0, 4.0)
    assert step.decide_seconds == pytest.approx(0.03)
    assert step.lock_wait_buckets == [
        (0.0005, 0.0),
        (0.001, 0.0),
        (0.01, 0.0),
        (0.025, 2.0),
        (float("inf"), 2.0),
    ]
    assert step.consumed == {"reports.submitted": 4.0, "cases.events": 0.0}
    assert step.duplicates == {"reports.submitted": 0.0}
    assert wait_per_batch_ms(step) == pytest.approx(20.0)
    # both waits in the (10, 25] ms bucket: the p99 is read inside it, as histogram_quantile does
    assert wait_p99_ms(step) == pytest.approx(10 + 15 * 0.99 * 2 / 2)
    assert wait_per_batch_ms(Work()) == 0.0 and wait_p99_ms(Work()) == 0.0


def test_the_queue_histogram_of_two_closers_is_their_sum() -> None:
    """Each closer observes the reports it took: buckets and counts add up, and the quantile is read
    over the sum (the entry would show one closer's at random)."""
    name = "gridloop_report_to_queue_seconds"

    def scrape(b1: float, b2: float, inf: float) -> str:
        return (
            f'{name}_bucket{{le="0.1"}} {b1}\n{name}_bucket{{le="0.5"}} {b2}\n'
            f'{name}_bucket{{le="+Inf"}} {inf}\n{name}_count {inf}\n'
        )

    one, two = histogram(scrape(10, 20, 20), name), histogram(scrape(0, 60, 80), name)
    buckets, count = sum_histograms([one, two])
    assert (buckets, count) == ([(0.1, 10.0), (0.5, 80.0), (float("inf"), 100.0)], 100.0)
    assert sum_histograms([]) == ([], 0)
    # 80 of 100 within 0.5 s: the p99 is past the last finite bucket, reported as its bound
    assert quantile(0.99, [], buckets) == 0.5
    assert quantile(0.5, [], buckets) == pytest.approx(0.1 + 0.4 * (50 - 10) / 70)


def _step(rate: float, e2e: float, p99: float, cpu: dict[str, float]) -> Step:
    return Step(
        offered_per_s=rate,
        seconds=20.0,
        accepted=int(rate * 20),
        errors={},
        accepted_per_s=rate,
        drain_seconds=0.5,
        end_to_end_per_s=e2e,
        post_p50_ms=3.0,
        post_p99_ms=9.0,
        queue_p50_ms=p99 / 2,
        queue_p95_ms=p99 * 0.9,
        queue_p99_ms=p99,
        cpu_seconds={k: v * rate * 20 / 1000 for k, v in cpu.items()},
        cpu_ms_per_report=cpu,
    )


def test_compare_gives_the_second_shape_over_the_first_at_each_common_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ratios per rate both shapes ran; lock wait per batch summed over each shape's routers."""
    one = ShapeRun(1, 2, (1.0, 1.0, 1.0), 30.0)
    one.steps = [
        ScaleStep(
            _step(100, 98.0, 200.0, {"router-0": 2.0, "closer-0": 1.0}),
            {"router-0": Work(lock_wait_seconds=0.05, lock_waits=100.0, decisions=2000.0)},
        ),
        ScaleStep(_step(300, 250.0, 2000.0, {"router-0": 1.5, "closer-0": 0.5}), {}),
    ]
    two = ShapeRun(2, 2, (1.0, 1.0, 1.0), 31.0)
    two.steps = [
        ScaleStep(
            _step(100, 98.0, 300.0, {"router-0": 1.5, "router-1": 1.5, "closer-0": 0.75, "closer-1": 0.75}),
            {
                "router-0": Work(lock_wait_seconds=0.03, lock_waits=60.0, decisions=1000.0),
                "router-1": Work(lock_wait_seconds=0.09, lock_waits=90.0, decisions=1000.0),
                "closer-0": Work(consumed={"reports.routed": 1000.0}),
            },
        ),
        ScaleStep(_step(200, 190.0, 400.0, {"router-0": 1.0}), {}),
    ]
    assert lock_wait_per_batch_ms(two.steps[0]) == pytest.approx(0.8)
    assert compare(one, two) == [
        {
            "offered_per_s": 100,
            "end_to_end_ratio": 1.0,
            "queue_p99_ratio": 1.5,
            "cpu_per_report_ratio": 1.5,
            "lock_wait_per_batch_ms_first": 0.5,
            "lock_wait_per_batch_ms_second": 0.8,
        }
    ]
    meta = {
        "date": "d",
        "machine": "m",
        "commit": "c",
        "partitions": 6,
        "step_seconds": 20.0,
        "load_average": "1",
    }
    print_tables(meta, [one, two])
    out = capsys.readouterr().out
    assert "router-1" in out and "0.500 → 0.800" in out


async def test_the_load_generator_opens_a_new_connection_after_connection_close() -> None:
    """Behind the entry proxy every answer closes its connection: each request is answered, none is
    lost to writing on a closed connection."""
    served = 0

    async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length")).split(b":")[1]
        )
        await reader.readexactly(length)
        served += 1
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_and_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run_load(f"http://127.0.0.1:{port}/api/v1/reports", lambda i: {"i": i}, 200, 0.5, 4)
    finally:
        server.close()
    # about 100 scheduled (a busy machine may wake the scheduler late); every one of them answered
    assert result.sent > 50
    assert (result.ok(), dict(result.errors), served) == (result.sent, {}, result.sent)
