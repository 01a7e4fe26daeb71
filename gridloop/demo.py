"""Demo constants every part shares: the 殷行街道 places file and the demo password.

Each service loads its own demo rows (`services.<name>.cli.load_demo`); `gridloop.cli.load_demo`
calls them in turn.
"""

from __future__ import annotations

from gridloop.settings import REPO_ROOT

DEMO_PLACES = REPO_ROOT / "data" / "demo" / "places.json"
DEMO_PASSWORD = "gridloop-demo"
DEMO_STREET = "yinhang"
