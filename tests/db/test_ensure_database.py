"""`gridloop.db.ensure_database`: the stack's database per service, created once and found again."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, make_url, text

from gridloop.db import ensure_database

pytestmark = pytest.mark.postgres


def test_a_database_is_created_once_and_found_again(pg_server_url: str) -> None:
    """The first call creates it, the second finds it (its rows kept); odd names are refused."""
    name = f"t_{uuid.uuid4().hex[:8]}_closer"
    url = ensure_database(pg_server_url, name)
    assert make_url(url).database == name
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE kept (n int)"))
            conn.execute(text("INSERT INTO kept VALUES (1)"))
        assert ensure_database(pg_server_url, name) == url
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM kept")).scalar_one() == 1
    finally:
        engine.dispose()
    with pytest.raises(ValueError, match="letters, digits and _ only"):
        ensure_database(pg_server_url, 'x"; DROP DATABASE postgres; --')
