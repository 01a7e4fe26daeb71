"""Send the queued Web Pushes: one replica per reporter database (`gridloop.leader`, role "push").

Each push is encrypted for its browser (aes128gcm, RFC 8291) and signed with the reporter's VAPID
key (RFC 8292) by pywebpush. The HTTP calls run in a worker thread, outside any transaction, never
in the consumer: a slow push service delays pushes, not the riders' read model. What a push
service answers decides the row's fate (`outcome`): delivered, gone (404/410: the subscription is
deleted with its queue), retried with backoff (network, 429, 5xx), or given up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import requests
from prometheus_client import Counter
from pywebpush import WebPushException, webpush
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, delete, select

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.service import Runtime
from services.reporter import push
from services.reporter.config import ReporterConfig
from services.reporter.models import PushMessage, PushSubscription
from services.reporter.vapid import VapidKeys

log = logging.getLogger(__name__)

Outcome = Literal["sent", "gone", "retry", "failed"]
MAX_BACKOFF_SECONDS = 3600.0
BATCH = 100
PRUNE_EVERY = timedelta(minutes=10)

pushes = Counter(
    "gridloop_push_deliveries_total",
    "Web Pushes to riders by outcome (sent, gone, retry, failed).",
    ["outcome"],
    registry=metrics.REGISTRY,
)


def outcome(status: int | None, attempts: int, max_attempts: int) -> Outcome:
    """What a push service's answer means (`status` None: no answer); `attempts` counts this one."""
    if status is not None and 200 <= status < 300:
        return "sent"
    if status in (404, 410):
        return "gone"  # the browser unsubscribed or the subscription expired (RFC 8030 §7.3)
    transient = status is None or status in (408, 425, 429) or status >= 500
    if transient and attempts < max_attempts:
        return "retry"
    return "failed"


def backoff(attempts: int, first: float) -> timedelta:
    """The wait before the next try: doubling from `first`, at most an hour."""
    return timedelta(seconds=min(first * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


@dataclass
class Due:
    """A push to try now, with its subscription."""

    message_id: int
    subscription_id: int
    attempts: int
    payload: str
    endpoint: str
    p256dh: str
    auth: str


def due(session: Session, now: datetime, limit: int = BATCH) -> list[Due]:
    """The pending pushes whose time has come, oldest first, one per browser: its oldest pending push
    (a later one waits for an earlier one's retry, so a browser sees its pushes in order)."""
    earlier = aliased(PushMessage)
    waiting = (
        select(earlier.id)
        .where(
            earlier.subscription_id == PushMessage.subscription_id,
            earlier.state == "pending",
            col(earlier.id) < col(PushMessage.id),
        )
        .exists()
    )
    rows = session.exec(
        select(PushMessage, PushSubscription)
        .join(PushSubscription, col(PushSubscription.id) == col(PushMessage.subscription_id))
        .where(PushMessage.state == "pending", col(PushMessage.next_attempt_at) <= now, ~waiting)
        .order_by(col(PushMessage.id))
        .limit(limit)
    ).all()
    return [Due(m.id or 0, s.id or 0, m.attempts, m.payload, s.endpoint, s.p256dh, s.auth) for m, s in rows]


def post_push(
    item: Due, keys: VapidKeys, http: requests.Session, timeout: float = 10.0
) -> tuple[int | None, str | None]:
    """Encrypt, sign and POST one push; (the push service's status or None, an error to keep)."""
    try:
        answer = webpush(
            {"endpoint": item.endpoint, "keys": {"p256dh": item.p256dh, "auth": item.auth}},
            item.payload,
            vapid_private_key=keys.signer,
            vapid_claims={"sub": keys.subject},
            ttl=push.PUSH_TTL_SECONDS,
            timeout=timeout,
            requests_session=http,
        )
    except WebPushException as exc:
        response = exc.response
        status = getattr(response, "status_code", None)
        return status, f"HTTP {status}" if status is not None else str(exc)[:200]
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]
    return getattr(answer, "status_code", 201), None


class PushSender:
    """The push outbox's sender: `tick()` sends what is due when this replica leads "push"."""

    def __init__(
        self,
        runtime: Runtime,
        keys: VapidKeys,
        config: ReporterConfig,
        session_factory: Callable[[], requests.Session] = requests.Session,
    ) -> None:
        self.runtime = runtime
        self.keys = keys
        self.config = config
        self.session_factory = session_factory
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pruned_at: datetime | None = None

    def wake(self) -> None:
        """New pushes were committed (callable from any thread: the consumer commits in a worker)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def tick(self) -> int | None:
        """Send the due pushes once (blocking); the pushes tried, or None when another replica leads."""
        if not self.runtime.leadership("push").check():
            return None
        db = self.runtime.db
        with db.session() as session:
            items = due(session, utcnow())
        if not items:
            now = utcnow()
            if self._pruned_at is None or now - self._pruned_at > PRUNE_EVERY:
                self._pruned_at = now
                self.prune()
            return 0
        hosts = self.config.push_host_list()
        http = self.session_factory()
        http.max_redirects = 0  # a push service answers; it never sends us elsewhere
        try:
            for item in items:
                if push.host_allowed(item.endpoint, hosts):
                    status, error = post_push(item, self.keys, http)
                else:
                    status, error = 403, "host no longer allowed (GRIDLOOP_PUSH_HOSTS)"
                self.record(item, status, error)
        finally:
            http.close()
        return len(items)

    def record(self, item: Due, status: int | None, error: str | None) -> Outcome:
        """Keep what the push service answered for one push."""
        attempts = item.attempts + 1
        result = outcome(status, attempts, self.config.push_max_attempts)
        pushes.labels(result).inc()
        now = utcnow()
        with self.runtime.db.session(write=True) as session:
            if result == "gone":
                push.forget(session, [item.subscription_id])
                return result
            row = session.get(PushMessage, item.message_id)
            if row is None:  # the rider unsubscribed meanwhile
                return result
            row.attempts = attempts
            row.last_error = error
            if result == "sent":
                row.state, row.sent_at = "sent", now
            elif result == "retry":
                row.next_attempt_at = now + backoff(attempts, self.config.push_retry_seconds)
            else:
                row.state = "failed"
                log.warning("push %d given up after %d tries: %s", item.message_id, attempts, error)
            session.add(row)
        return result

    def prune(self) -> int:
        """Forget pushes sent or given up longer ago than the dedup window (their event ids are done)."""
        cutoff = utcnow() - timedelta(seconds=self.runtime.settings.dedup_window_seconds)
        with self.runtime.db.session(write=True) as session:
            result = session.exec(
                delete(PushMessage).where(
                    col(PushMessage.state) != "pending", col(PushMessage.created_at) < cutoff
                )
            )
            return int(result.rowcount)

    def loop(self) -> Callable[[], Coroutine[Any, Any, None]]:
        """The background task: send when woken, else every push_poll_seconds."""

        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.config.push_poll_seconds)
                except TimeoutError:
                    pass
                self._wake.clear()
                try:
                    # a browser's next push is due as soon as its previous one went: go on while sending
                    while await asyncio.to_thread(self.tick):
                        pass
                except Exception:
                    log.exception("push sending failed")

        return run
