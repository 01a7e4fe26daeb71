"""A small inline SVG map of a grid polygon and a point (no tiles, no external requests)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape


def svg_map(
    ring: Sequence[tuple[float, float]] | None,
    point: tuple[float, float] | None,
    label: str = "",
    width: int = 320,
    height: int = 240,
    others: Sequence[tuple[float, float]] = (),
) -> Markup:
    """The grid ring ((lon, lat) pairs) and the point (lat, lon) drawn to fit, north up; `others`
    (lat, lon) are more points, drawn as dots (a topic's cases)."""
    lons = [lon for lon, _ in ring or ()] + ([point[1]] if point else []) + [lon for _, lon in others]
    lats = [lat for _, lat in ring or ()] + ([point[0]] if point else []) + [lat for lat, _ in others]
    if not lons:
        return Markup("")
    mid_lat = (min(lats) + max(lats)) / 2
    kx = math.cos(math.radians(mid_lat))  # metres per degree of longitude shrink with latitude
    xs = [lon * kx for lon in lons]
    span_x = max(max(xs) - min(xs), 1e-5)
    span_y = max(max(lats) - min(lats), 1e-5)
    pad = 12
    scale = min((width - 2 * pad) / span_x, (height - 2 * pad) / span_y)
    ox = (width - scale * span_x) / 2
    oy = (height - scale * span_y) / 2

    def xy(lon: float, lat: float) -> tuple[float, float]:
        return ox + (lon * kx - min(xs)) * scale, height - (oy + (lat - min(lats)) * scale)

    parts = [
        f'<svg class="map" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect width="{width}" height="{height}" class="map-bg"/>',
    ]
    if ring:
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(lon, lat) for lon, lat in ring))
        parts.append(f'<polygon points="{pts}" class="map-grid"/>')
    for lat, lon in others:
        x, y = xy(lon, lat)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" class="map-case"/>')
    if point:
        x, y = xy(point[1], point[0])
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" class="map-point"/>')
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" class="map-dot"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
