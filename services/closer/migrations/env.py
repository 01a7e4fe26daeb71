"""Alembic environment: shared by every service (see gridloop.migrate)."""

from gridloop.migrate import run_env

run_env()
