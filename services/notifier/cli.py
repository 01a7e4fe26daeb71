"""The notifier's `gridloop` commands: `gridloop notify test URL` sends a test message now.

`gridloop notifier` (run the service) is the CLI's own. The test send goes from this process straight
through Apprise: no service, broker or database needed, so a new channel is tried before any rule
names it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_test(args: argparse.Namespace) -> int:
    """Send one test message to an Apprise URL; exit 0 when Apprise says it went, 1 when not."""
    from services.notifier import channels
    from services.notifier.api import TEST_BODY, TEST_TITLE

    if not channels.is_sendable(args.url):
        print(f"error: not a URL Apprise can send to: {channels.masked(args.url)}", file=sys.stderr)
        return 2
    ok, error = channels.send(args.url, args.title or TEST_TITLE, args.body or TEST_BODY)
    if ok:
        print(f"sent to {channels.masked(args.url)}")
        return 0
    print(f"error: not sent to {channels.masked(args.url)}: {error}", file=sys.stderr)
    return 1


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `gridloop notify …` to the command line."""
    notify = sub.add_parser("notify", help="notifications: try a channel")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True)
    test = notify_sub.add_parser(
        "test", help="send a test message to an Apprise URL (wecombot://, json://, …)"
    )
    test.add_argument("url", help="the Apprise URL")
    test.add_argument("--title", help="the title (default: a Chinese test title)")
    test.add_argument("--body", help="the text (default: a Chinese and English test text)")
    test.set_defaults(func=cmd_test)
