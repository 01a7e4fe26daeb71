"""The router's `gridloop` commands: none, kept so `gridloop.cli` mounts every service the same way.

`gridloop router` (run the service) is the CLI's own. The router has no demo data to load (so no
``load_demo``): the reference places file (``RouterConfig.places_file``) is read at start-up, and
everything else it knows arrives on `reports.submitted` and `cases.events`.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the router's commands to `gridloop` (there are none)."""
