"""Browser tests get headless Chromium: the `browser` (one per module) and `phone` fixtures."""

from tests.support.browser import browser, phone

__all__ = ["browser", "phone"]
