"""What one replica did, read from its own /metrics (pure: exposition text in, numbers out).

The scale-out benchmark scrapes each router and closer replica directly, never through the entry
(which answers for one replica at random), and subtracts two scrapes to get one step's work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from bench.pipeline import histogram, quantile

LOCK_WAIT = "gridloop_route_lock_wait_seconds"


@dataclass(frozen=True)
class Work:
    """Counters of one replica (since it started, or over a step once subtracted)."""

    lock_wait_seconds: float = 0.0
    lock_waits: float = 0.0
    """Batches that took their routing locks (one observation each)."""
    lock_wait_buckets: list[tuple[float, float]] = field(default_factory=list)
    decisions: float = 0.0
    decide_seconds: float = 0.0
    """The sum of the per-report decision times (`gridloop_route_duration_seconds_sum`, wall clock)."""
    consumed: dict[str, float] = field(default_factory=dict)
    """Events applied, by topic (duplicates excluded)."""
    duplicates: dict[str, float] = field(default_factory=dict)
    """Redelivered events skipped, by topic."""


def _by_topic(samples: dict[str, float], key: str, value: float) -> None:
    samples[key] = samples.get(key, 0.0) + value


def work_of(text: str) -> Work:
    """The routing lock's wait (sum, count, buckets), route decisions and the time spent on them, and
    the events applied and skipped, by topic, in one scrape."""
    wait_sum = wait_count = decisions = decide = 0.0
    consumed: dict[str, float] = {}
    duplicates: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{LOCK_WAIT}_sum":
                wait_sum += sample.value
            elif sample.name == f"{LOCK_WAIT}_count":
                wait_count += sample.value
            elif sample.name == "gridloop_route_decisions_total":
                decisions += sample.value
            elif sample.name == "gridloop_route_duration_seconds_sum":
                decide += sample.value
            elif sample.name == "gridloop_events_consumed_total":
                _by_topic(consumed, sample.labels["topic"], sample.value)
            elif sample.name == "gridloop_events_duplicate_total":
                _by_topic(duplicates, sample.labels["topic"], sample.value)
    buckets, _ = histogram(text, LOCK_WAIT)
    return Work(wait_sum, wait_count, buckets, decisions, decide, consumed, duplicates)


def step_work(before: Work, after: Work) -> Work:
    """What a replica did between two scrapes (its counters only grow while it runs)."""
    prev = dict(before.lock_wait_buckets)
    return Work(
        lock_wait_seconds=after.lock_wait_seconds - before.lock_wait_seconds,
        lock_waits=after.lock_waits - before.lock_waits,
        lock_wait_buckets=[(le, count - prev.get(le, 0.0)) for le, count in after.lock_wait_buckets],
        decisions=after.decisions - before.decisions,
        decide_seconds=after.decide_seconds - before.decide_seconds,
        consumed={t: n - before.consumed.get(t, 0.0) for t, n in after.consumed.items()},
        duplicates={t: n - before.duplicates.get(t, 0.0) for t, n in after.duplicates.items()},
    )


def wait_per_batch_ms(work: Work) -> float:
    """Mean lock wait per batch in milliseconds (0 with no batch)."""
    return work.lock_wait_seconds / work.lock_waits * 1000 if work.lock_waits else 0.0


def wait_p99_ms(work: Work) -> float:
    """p99 of a step's lock waits in milliseconds (from the step's bucket differences)."""
    return quantile(0.99, [], work.lock_wait_buckets) * 1000
