"""Group commit: small write transactions that arrive together share one database transaction.

Each request still succeeds or fails on its own, but a burst of riders costs one BEGIN/COMMIT
instead of one per report; SQLite has a single writer, so this is where intake
throughput comes from. A request waits at most for the batch in front of it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from gridloop.db import Database
from gridloop.errors import ApiError
from gridloop.logs import detached
from gridloop.rawsql import Tx

log = logging.getLogger(__name__)
T = TypeVar("T")
Work = Callable[[Tx], Any]


class GroupCommit:
    """Batches write transactions of one process; use `await run(work)` from the event loop."""

    def __init__(self, db: Database, max_batch: int = 128) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0
        self._retried: set[int] = set()

    async def run(self, work: Callable[[Tx], T]) -> T:
        """Run work(tx) inside the next shared transaction (plain SQL: gridloop.rawsql); its result or
        exception comes back."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # the work runs in its caller's context (its request's log ids), the drainer in none of them
        context = contextvars.copy_context()

        def bound(tx: Tx) -> T:
            return context.run(work, tx)

        self._queue.append((bound, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), context=detached())
        result: T = await future
        return result

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                outcomes, retry = await asyncio.to_thread(self._apply, [work for work, _ in batch])
            except Exception as exc:  # the commit itself failed: nobody's work is stored
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            for (work, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if id(work) in retry and id(work) not in self._retried:
                    # a unique key raced inside the batch: run it again (once) now that the winner committed
                    self._retried.add(id(work))
                    self._queue.append((work, future))
                    continue
                self._retried.discard(id(work))
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _apply(self, works: list[Work]) -> tuple[list[tuple[bool, Any]], set[int]]:
        try:
            outcomes, retry, callbacks = self._attempt(works, careful=False)
        except Exception as exc:
            # something failed that is not a clean refusal: find out whose, a savepoint each
            log.info("group commit of %d needs a careful pass (%s)", len(works), exc)
            outcomes, retry, callbacks = self._attempt(works, careful=True)
        for callback in callbacks:  # committed: what the works left for after the commit (metrics)
            callback()
        return outcomes, retry

    def _attempt(
        self, works: list[Work], careful: bool
    ) -> tuple[list[tuple[bool, Any]], set[int], list[Callable[[], None]]]:
        """One transaction for all works: straight through, or (careful) each in its savepoint.

        Straight through costs no savepoint per request. It relies on the contract of the works: an
        ApiError (a refusal: a bad code, a rate limit) is raised before the work wrote anything, so
        the others' writes stand. Any other exception aborts the attempt and the careful pass runs.
        """
        outcomes: list[tuple[bool, Any]] = []
        retry: set[int] = set()
        callbacks: list[Callable[[], None]] = []
        with self.db.transaction(write=True) as tx:
            tx.info["after_commit"] = callbacks
            for work in works:
                mark = len(callbacks)
                if not careful:
                    try:
                        outcomes.append((True, work(tx)))
                    except ApiError as exc:
                        outcomes.append((False, exc))
                        del callbacks[mark:]
                    continue
                try:
                    with tx.savepoint():
                        outcomes.append((True, work(tx)))
                except self.db.integrity_errors as exc:
                    retry.add(id(work))
                    outcomes.append((False, exc))
                    del callbacks[mark:]
                except Exception as exc:
                    outcomes.append((False, exc))
                    del callbacks[mark:]
        return outcomes, retry, callbacks
