"""The order the full run takes its tests in: the modules that need the Go tools last.

`scripts/test` builds amtool and helm in the background while the suite starts (tests/support/gotools.py),
minutes of a fresh machine's two cores. Run last, the modules that use them find them built instead of
holding the run while the build finishes; every other module keeps its place.

The run stays on one worker: the suite is CPU-bound on two cores (its brokers, stacks and browsers are
processes of their own), and two xdist workers made each test about 2.5 times slower, for a longer run
in all (1,427 and 1,690 s against 1,133 s serial).
"""

from __future__ import annotations

import pytest

# the modules that use amtool or helm, built with `go install` while the run starts
GO_TOOLS = frozenset(
    {"tests/e2e/test_monitoring.py", "tests/e2e/test_helm_workloads.py", "tests/unit/test_helm.py"}
)


def order(items: list[pytest.Item]) -> None:
    """Move the Go tools' users to the end, in place (a stable sort: all else keeps its order)."""
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] in GO_TOOLS)
