"""Helpers to run the three services as real processes against a test broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gridloop.cli import load_demo
from gridloop.settings import Settings
from gridloop.stack import Stack, isolated_settings


def stack_settings(var_dir: Path, bootstrap: str, prefix: str, **extra: Any) -> Settings:
    """Settings for an isolated stack, measuring lag every second."""
    return isolated_settings(var_dir, bootstrap, prefix, **{"lag_interval_seconds": 1.0, **extra})


def start_stack(settings: Settings, broker: str = "external", demo: bool = True, **env: str) -> Stack:
    """Start a stack (topics, migrations, demo data, 3 processes) and wait until ready."""
    stack = Stack(settings=settings, broker=broker, demo=load_demo if demo else None, extra_env=dict(env))  # type: ignore[arg-type]
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def wait_for(
    check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1, what: str = "condition"
) -> Any:
    """Poll until check() returns a truthy value; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, AssertionError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def staff_token(closer_url: str, username: str, password: str = "gridloop-demo") -> str:
    """A bearer token for a demo account."""
    r = httpx.post(f"{closer_url}/api/v1/auth/token", data={"username": username, "password": password})
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return token
