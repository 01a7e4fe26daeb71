"""Database engines and sessions: SQLite (WAL, foreign keys on) embedded, PostgreSQL in production."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import registry
from sqlmodel import Session, SQLModel

from gridloop.rawsql import Tx


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgresql:// URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(engine: Engine) -> bool:
    """True for a SQLite engine."""
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; SQLAlchemy emits BEGIN itself instead
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers (HTTP handlers) run while a consumer commits; NORMAL is durable in WAL
    # mode up to the last checkpointed commit, which is the documented trade-off we accept.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # writers take the lock up front: a deferred transaction that reads and then writes can fail
    # at once with SQLITE_BUSY when another writer holds the lock, instead of waiting for it
    if conn.get_execution_options().get("sqlite_immediate"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for SQLite or PostgreSQL with the project's connection settings."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def create_database(server_url: str, prefix: str = "gl_") -> str:
    """Create an empty database on a PostgreSQL server and return its URL (tests, benchmarks)."""
    import uuid

    from sqlalchemy import make_url

    name = prefix + uuid.uuid4().hex[:12]
    admin = create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(normalize_url(server_url)).set(database=name).render_as_string(hide_password=False)


def ensure_database(server_url: str, name: str) -> str:
    """The URL of database `name` on a PostgreSQL server, created first when it is not there."""
    from sqlalchemy import make_url

    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"database name {name!r}: letters, digits and _ only")
    admin = create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if found is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(normalize_url(server_url)).set(database=name).render_as_string(hide_password=False)


def service_base(name: str) -> type[SQLModel]:
    """A SQLModel base with its own MetaData, so one service's migrations see only its tables."""
    reg = registry(metadata=MetaData())
    return type(f"{name.title()}Base", (SQLModel,), {}, registry=reg)


class Database:
    """One service's database: its engine and a session factory."""

    def __init__(self, url: str, metadata: MetaData) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self.write_engine = self.engine.execution_options(sqlite_immediate=True)
        self.metadata = metadata
        # SQLite has one writer at a time. Threads of this process queue here, in order, instead of
        # spinning in SQLite's busy handler (which sleeps up to 100 ms a try and starves throughput);
        # other processes still meet the busy timeout.
        self._write_lock: threading.RLock | None = threading.RLock() if is_sqlite(self.engine) else None
        # what a unique key violation raises on the driver (plain SQL sees the DBAPI's own errors)
        self.integrity_errors: tuple[type[Exception], ...] = (
            IntegrityError,
            self.engine.dialect.loaded_dbapi.IntegrityError,
        )

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold this process's write turn (SQLite); a no-op on PostgreSQL."""
        if self._write_lock is None:
            yield
            return
        with self._write_lock:
            yield

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session that commits on success and rolls back on error; `write` locks SQLite up front.

        Callbacks given to `rawsql.after_commit(session, ...)` run once the session has committed."""
        bind = self.write_engine if write else self.engine
        callbacks: list[Callable[[], None]] = []
        with self.writing() if write else nullcontext(), Session(bind, expire_on_commit=False) as session:
            session.info["after_commit"] = callbacks
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
        for callback in callbacks:
            callback()

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Tx]:
        """A transaction for plain SQL only (a Tx), on a pooled connection: commits on success and
        rolls back on error, like `session()`, at a tenth of its cost; `write` locks SQLite up front."""
        sqlite = self._write_lock is not None
        with self.writing() if write else nullcontext():
            pooled = self.engine.raw_connection()
            try:
                driver = pooled.driver_connection
                tx = Tx(driver, sqlite)
                if sqlite:
                    tx.cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield tx
                    if sqlite:
                        tx.cursor.execute("COMMIT")
                    else:
                        driver.commit()  # type: ignore[union-attr]
                except BaseException:
                    if not sqlite:
                        driver.rollback()  # type: ignore[union-attr]
                    elif driver.in_transaction:  # type: ignore[union-attr]
                        tx.cursor.execute("ROLLBACK")
                    raise
            finally:
                pooled.close()

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def create_all(self) -> None:
        """Create every table directly (tests); production uses `gridloop db upgrade`."""
        self.metadata.create_all(self.engine)

    def dispose(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()
