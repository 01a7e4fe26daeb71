"""The demo's hot spot (议题): piled-up shared bikes around 地铁市光路站2号口 in 殷行, reported by four
riders at four points 110 m apart (separate cases: beyond the 80 m merge radius, within the 200 m of
the category's topic rule), so the centre's topic list shows a suggestion.

Sent through the reporter's public API like any rider, so each rider has a tracking page that later
shows the topic's outcome. `gridloop up` sends it once per data directory (a marker file in var/);
`gridloop demo hotspot --reporter URL` sends it again to any running stack.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import httpx

METRO_EXIT = (31.3230, 121.5222)  # 地铁市光路站2号口 (demo place yh-p21)
STEP_M = 110.0
OFFSETS_M = ((0.0, 0.0), (STEP_M, 0.0), (-STEP_M, 0.0), (0.0, STEP_M))
"""(north, east) metres from the exit: every point within 200 m of the first, each pair over 80 m apart."""
WORDS = (
    "地铁口共享单车堆成一片，人行道完全走不过去",
    "地铁站北侧单车倒了一地，电动车只能绕到机动车道",
    "地铁口南边单车堆积，盲道被占",
    "地铁口东侧单车乱停，外卖车停不进去",
)
PLATFORMS = ("美团", "饿了么", "顺丰", "美团")
MARKER = "demo-hotspot.sent"


def points() -> list[tuple[float, float]]:
    """The four reports' (lat, lon)."""
    lat0, lon0 = METRO_EXIT
    per_lat = 180 / (math.pi * 6_371_008.8)
    per_lon = per_lat / math.cos(math.radians(lat0))
    return [(lat0 + n * per_lat, lon0 + e * per_lon) for n, e in OFFSETS_M]


def send(reporter_url: str, timeout: float = 10.0) -> list[str]:
    """Post the four reports, one rider each (each client gets its own rider cookie); their ids."""
    ids: list[str] = []
    for (lat, lon), words, platform in zip(points(), WORDS, PLATFORMS, strict=True):
        with httpx.Client(base_url=reporter_url, timeout=timeout) as rider:
            r = rider.post(
                "/api/v1/reports",
                json={
                    "category": "shared_bikes",
                    "description": words,
                    "platform": platform,
                    "location": {"lat": lat, "lon": lon},
                },
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            r.raise_for_status()
            ids.append(str(r.json()["report_id"]))
    return ids


def send_once(reporter_url: str, var_dir: Path) -> list[str]:
    """`send`, unless this data directory has had its hot spot already (then nothing)."""
    marker = var_dir / MARKER
    if marker.exists():
        return []
    ids = send(reporter_url)
    marker.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return ids
