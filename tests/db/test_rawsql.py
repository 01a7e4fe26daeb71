"""Plain SQL on the driver (gridloop.rawsql): the same stored values as the ORM, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, DateTime, Integer, String
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, select

from gridloop.db import Database
from gridloop.rawsql import Raw, in_list, insert_model, insert_row, read_ts


class Base(SQLModel, registry=registry()):
    """The test tables, in a MetaData of their own."""


class Thing(Base, table=True):
    """A row with the column kinds the hot paths write."""

    __tablename__ = "thing"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(40), nullable=False))
    flag: bool = False
    score: float | None = None
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    maybe_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    count: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))


class Case(Base, table=True):
    """A table named with a reserved word, as the closer's is."""

    __tablename__ = "case"

    case_id: str = Field(primary_key=True, max_length=10)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


T = datetime(2026, 11, 24, 9, 30, 0, tzinfo=UTC)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A fresh database with the test tables, on both engines."""
    database = Database(db_url, Base.metadata)
    database.create_all()
    yield database
    database.dispose()


def test_rows_written_raw_read_the_same_through_the_orm(db: Database) -> None:
    """Timestamps (whole seconds, microseconds, other zones), booleans and NULLs round-trip."""
    shanghai = timezone(timedelta(hours=8))
    when = [T, T + timedelta(microseconds=7), (T + timedelta(hours=1)).astimezone(shanghai)]
    with db.transaction(write=True) as tx:
        raw = Raw(tx)
        for i, at in enumerate(when):
            insert_row(
                raw, "thing", {"name": f"n{i}", "flag": i % 2 == 0, "score": None, "at": at, "count": i}
            )
    with db.session() as s:
        rows = list(s.exec(select(Thing).order_by(Thing.id)))  # type: ignore[arg-type]
    assert [r.name for r in rows] == ["n0", "n1", "n2"]
    assert [read_ts(r.at) for r in rows] == [w.astimezone(UTC) for w in when]
    assert [r.flag for r in rows] == [True, False, True]
    assert all(r.score is None and r.maybe_at is None for r in rows)


def test_rows_written_by_the_orm_read_the_same_raw(db: Database) -> None:
    """What the ORM stored compares and parses equal in plain SQL (range queries on timestamps)."""
    with db.session(write=True) as s:
        s.add(Thing(name="orm", flag=True, score=1.5, at=T, maybe_at=T + timedelta(seconds=1)))
    with db.transaction() as tx:
        raw = Raw(tx)
        row = raw.first(
            "SELECT name, flag, score, at, maybe_at FROM thing WHERE at >= :lo AND at < :hi",
            {"lo": raw.ts(T), "hi": raw.ts(T + timedelta(microseconds=1))},
        )
    assert row is not None
    name, flag, score, at, maybe_at = row
    assert (name, bool(flag), score) == ("orm", True, 1.5)
    assert (read_ts(at), read_ts(maybe_at)) == (T, T + timedelta(seconds=1))


def test_orm_model_insert_and_reserved_table_name(db: Database) -> None:
    """insert_model writes a SQLModel instance; a table called "case" is quoted."""
    with db.transaction(write=True) as tx:
        insert_model(Raw(tx), Case(case_id="c1", at=T))
        insert_model(Raw(tx), Thing(name="m", at=T))
    with db.session() as s:
        assert s.get(Case, "c1") is not None
        thing = s.exec(select(Thing)).one()
        assert (thing.count, thing.flag) == (0, False)


def test_transaction_rolls_back_on_error_and_savepoints_undo_alone(db: Database) -> None:
    """A Tx commits on success, rolls back on error; a savepoint that raises undoes only its part."""
    with pytest.raises(RuntimeError), db.transaction(write=True) as tx:
        insert_row(Raw(tx), "thing", {"name": "lost", "at": T, "count": 0, "flag": False})
        raise RuntimeError("boom")
    with db.transaction(write=True) as tx:
        raw = Raw(tx)
        insert_row(raw, "thing", {"name": "kept", "at": T, "count": 0, "flag": False})
        with pytest.raises(db.integrity_errors), tx.savepoint():
            insert_row(raw, "case", {"case_id": "dup", "at": T})
            insert_row(raw, "case", {"case_id": "dup", "at": T})  # unique key: the savepoint is undone
        insert_row(raw, "case", {"case_id": "after", "at": T})
    with db.transaction() as tx:
        raw = Raw(tx)
        assert [r[0] for r in raw.all("SELECT name FROM thing")] == ["kept"]
        assert [r[0] for r in raw.all('SELECT case_id FROM "case"')] == ["after"]


def test_in_lists_and_literal_percent(db: Database) -> None:
    """IN lists expand to parameters (empty ones match nothing); a literal % survives psycopg's style."""
    with db.transaction(write=True) as tx:
        raw = Raw(tx)
        for name in ("a%b", "ab", "c"):
            insert_row(raw, "thing", {"name": name, "at": T, "count": 0, "flag": False})
        params: dict[str, object] = {}
        found = raw.all(f"SELECT name FROM thing WHERE name IN {in_list('n', ['a%b', 'c'], params)}", params)
        assert sorted(r[0] for r in found) == ["a%b", "c"]
        assert raw.all(f"SELECT name FROM thing WHERE name IN {in_list('n', [], {})}") == []
        assert [r[0] for r in raw.all("SELECT name FROM thing WHERE name LIKE 'a%' ORDER BY name")] == [
            "a%b",
            "ab",
        ]


def test_plain_sql_joins_an_orm_session_transaction(db: Database) -> None:
    """Raw on a session runs in the session's transaction: rolled back together."""
    with pytest.raises(RuntimeError), db.session(write=True) as s:
        s.add(Thing(name="orm", at=T))
        s.flush()
        insert_row(Raw(s), "thing", {"name": "raw", "at": T, "count": 0, "flag": False})
        raise RuntimeError("boom")
    with Session(db.engine) as s:
        assert list(s.exec(select(Thing))) == []


@settings(max_examples=300, deadline=None)
@given(
    naive=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    aware=st.booleans(),
    offset_minutes=st.integers(-12 * 60, 14 * 60),
)
def test_sqlite_timestamps_are_formatted_as_sqlalchemy_does(
    naive: datetime, aware: bool, offset_minutes: int
) -> None:
    """The fast formatter gives SQLAlchemy's SQLite text for naive, UTC and other-zone values."""
    from gridloop.rawsql import _sqlite_ts

    def expected(value: datetime) -> str:
        return (value.astimezone(UTC) if value.tzinfo else value).strftime("%Y-%m-%d %H:%M:%S.%f")

    when = naive.replace(tzinfo=UTC) if aware else naive
    assert _sqlite_ts(when) == expected(when)
    if aware:
        other = when.astimezone(timezone(timedelta(minutes=offset_minutes)))
        assert _sqlite_ts(other) == expected(when)
