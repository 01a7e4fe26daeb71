"""Throwaway databases on the test PostgreSQL server."""

from __future__ import annotations

from gridloop.db import create_database


def new_pg_database(server_url: str) -> str:
    """Create an empty database on the server and return its URL."""
    return create_database(server_url, "t_")
