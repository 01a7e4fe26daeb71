"""Leadership of one role (relay, re-drive, pruning) per service database, re-checked before each use.

PostgreSQL: a session advisory lock on a connection of its own, with an id derived from the service
and role names by a stable hash (never `hash()`, which Python randomises per process). The session
lock lives as long as that connection, so the connection answering `SELECT 1` proves the lock is
still held; a connection that fails means leadership is lost: it is dropped, and the next check
connects again and tries for the lock. SQLite: an exclusive `flock` on a file beside the database
(one machine by nature), held as long as the file stays open; an in-memory database always leads.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool

from gridloop import metrics
from gridloop.db import Database, is_sqlite
from gridloop.rawsql import Raw

log = logging.getLogger(__name__)

# PostgreSQL only (not registered: SQLite has no advisory locks)
_TRY_LOCK = "SELECT pg_try_advisory_lock(:key)"
_UNLOCK = "SELECT pg_advisory_unlock(:key)"
_ALIVE = "SELECT 1"
# a dead peer or network must fail the check within seconds, not after the kernel's TCP timeout
_CONNECT_ARGS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 10_000,
}


def lock_id(service: str, role: str) -> int:
    """The advisory-lock id of (service, role): the same in every process and Python version."""
    digest = hashlib.blake2b(f"gridloop/{service}/{role}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)  # PostgreSQL's bigint


class Leadership:
    """Whether this process leads `role` for its service database; `check()` before acting as leader."""

    def __init__(self, db: Database, service: str, role: str) -> None:
        self.service = service
        self.role = role
        self.key = lock_id(service, role)
        self.held = False
        self.term = 0
        """Incremented each time leadership is gained: a new term may follow another leader's death."""
        self._sqlite = is_sqlite(db.engine)
        self._url = db.url
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._file: int | None = None
        database = db.engine.url.database if self._sqlite else None
        self._lock_path = Path(f"{database}.{role}.leader") if database and database != ":memory:" else None

    def check(self) -> bool:
        """True while this process leads (blocking: a round trip on PostgreSQL; run it in a thread)."""
        try:
            held = self._check_sqlite() if self._sqlite else self._check_postgres()
        except Exception as exc:
            log.warning("%s %s leadership lost: %s", self.service, self.role, exc)
            self._drop()
            held = False
        if held and not self.held:
            self.term += 1
            log.info("%s: leading %s (term %d)", self.service, self.role, self.term)
        self.held = held
        metrics.leader.labels(self.service, self.role).set(1 if held else 0)
        return held

    def _check_sqlite(self) -> bool:
        if self._lock_path is None:
            return True  # an in-memory database: one process by construction
        if self._file is not None:
            return True  # the flock lasts as long as the open file
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._file = fd
        return True

    def _check_postgres(self) -> bool:
        if self._conn is not None:
            if self.held:
                Raw(self._conn).scalar(_ALIVE)  # raises when the session (and with it the lock) is gone
                return True
            return bool(Raw(self._conn).scalar(_TRY_LOCK, {"key": self.key}))
        if self._engine is None:
            # not the service's pool: a pooled connection would hand the lock on to whoever used it next
            self._engine = create_engine(self._url, poolclass=NullPool, connect_args=_CONNECT_ARGS)
        self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return bool(Raw(self._conn).scalar(_TRY_LOCK, {"key": self.key}))

    def _drop(self) -> None:
        """Forget the lock connection (or file); the next check starts again."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # a connection already dead may fail to close; it is gone either way
                log.debug("lock connection close failed", exc_info=True)
        fd, self._file = self._file, None
        if fd is not None:
            os.close(fd)

    def release(self) -> None:
        """Give leadership up: unlock, then close (closing alone frees the lock only once the server has
        ended the backend, a moment in which a successor's try would still fail)."""
        if self._conn is not None and self.held:
            try:
                Raw(self._conn).scalar(_UNLOCK, {"key": self.key})
            except Exception:  # a dead connection: its lock went with its session
                log.debug("advisory unlock failed", exc_info=True)
        self._drop()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self.held:
            metrics.leader.labels(self.service, self.role).set(0)
        self.held = False

    def connection_pid(self) -> Any:
        """The PostgreSQL backend pid of the lock connection, or None (operators and tests)."""
        if self._conn is None:
            return None
        return Raw(self._conn).scalar("SELECT pg_backend_pid()")
