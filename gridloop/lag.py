"""Consumer lag per group and topic: committed offsets against the partitions' high watermarks."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from kafka import KafkaAdminClient, TopicPartition
from kafka.protocol.consumer.offsets import OffsetSpec

from gridloop.kafkaauth import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)
T = TypeVar("T")
LagSource = Literal["list_offsets", "highwater"]


@dataclass(frozen=True)
class GroupTopics:
    """A consumer group and the topics (as named on the broker) it reads."""

    group: str
    topics: tuple[str, ...]


def lag_from_offsets(
    partitions: Iterable[TopicPartition],
    committed: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
) -> dict[str, int]:
    """Sum per topic of (high watermark - committed offset); a partition never committed counts whole."""
    out: dict[str, int] = {}
    for tp in partitions:
        end = ends.get(tp)
        if end is None:
            continue
        out[tp.topic] = out.get(tp.topic, 0) + max(end - committed.get(tp, 0), 0)
    return out


class LagMonitor:
    """Measures consumer lag with kafka-python's admin client.

    The embedded Tansu broker can answer ListOffsets "latest" wrongly; there the high watermarks come
    from the fetch responses of this process's own consumers instead (source="highwater").
    """

    def __init__(
        self,
        bootstrap_servers: str,
        groups: list[GroupTopics],
        source: LagSource = "list_offsets",
        security: KafkaSecurity = PLAINTEXT,
    ):
        self.bootstrap_servers = bootstrap_servers
        self.security = security
        self.groups = groups
        self.source = source
        self._admin: KafkaAdminClient | None = None
        self.highwaters: dict[TopicPartition, int] = {}

    def _client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers.split(","),
                client_id="gridloop-lag",
                request_timeout_ms=5000,
                **self.security.client_kwargs(),
            )
        return self._admin

    def close(self) -> None:
        """Drop the admin connection."""
        if self._admin is not None:
            try:
                self._admin.close()
            finally:
                self._admin = None

    def measure(self) -> dict[tuple[str, str], int]:
        """Lag per (group, topic as named on the broker)."""
        try:
            return self._measure()
        except Exception:
            self.close()  # a broken connection is rebuilt on the next measurement
            raise

    def _measure(self) -> dict[tuple[str, str], int]:
        admin = self._client()
        topics = sorted({t for g in self.groups for t in g.topics})
        described = admin.describe_topics(topics)
        partitions = [
            TopicPartition(t["name"], p["partition_index"])
            for t in described
            if not t.get("error_code")
            for p in t["partitions"]
        ]
        if self.source == "highwater":
            ends = dict(self.highwaters)
        else:
            answer: dict[Any, Any] = admin.list_partition_offsets(
                {tp: OffsetSpec.LATEST for tp in partitions}
            )
            ends = {tp: int(v.offset) for tp, v in answer.items()}
        offsets = admin.list_group_offsets({g.group: None for g in self.groups})
        result: dict[tuple[str, str], int] = {}
        for g in self.groups:
            committed = {tp: int(m.offset) for tp, m in (offsets.get(g.group) or {}).items() if m.offset >= 0}
            mine = [tp for tp in partitions if tp.topic in g.topics]
            per_topic = lag_from_offsets(mine, committed, ends)
            for topic in g.topics:
                result[(g.group, topic)] = per_topic.get(topic, 0)
        return result


async def off_loop(fn: Callable[[], T], name: str) -> T:
    """Run a blocking call in a daemon thread of its own and await its result.

    Not asyncio.to_thread: kafka-python's admin client can block its thread with no deadline (seen in
    the suite: a bootstrap to an unreachable broker that never returned), and asyncio.run joins the
    default executor's threads when the loop shuts down, so one stuck measurement kept a service from
    ever exiting. A daemon thread is abandoned at exit instead; the caller bounds the wait."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if done.done():  # the waiter gave up (cancelled or timed out)
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, exc = fn(), None
        except BaseException as e:  # handed to the awaiting task, whatever it is
            result, exc = None, e
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop closed meanwhile: nobody waits any more
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done
