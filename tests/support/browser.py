"""Headless Chromium for browser tests: Debian's chromium driven by Playwright, on a phone viewport.

tests/browser/conftest.py provides the fixtures `browser` and `phone` to the tests there.
Without chromium the tests skip locally, and fail on CI (CI=true), where it must be installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("GRIDLOOP_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "locale": "zh-CN",
    "timezone_id": "Asia/Shanghai",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module (skipped without chromium, except on CI).

    Module scope on purpose: Playwright's sync API keeps an event loop running in the main thread
    while it is open, which would break later tests that call asyncio.run().
    """
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"chromium is required on CI but {CHROMIUM} is missing")
        pytest.skip(f"no chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A fresh phone-sized browser context (own cookies and storage) for one test."""
    context = browser.new_context(**PHONE)
    context.set_default_timeout(20_000)
    try:
        yield context
    finally:
        context.close()
