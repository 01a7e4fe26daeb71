"""Topic suggestions (议题建议), the pure part: which recent cases of one category cluster in one place.

A category's `topic` rule (schemas.reference.TopicRule, data/jurisdictions/categories.json) names N,
R and D: N cases of the category submitted within the last D days, either within R metres of one of
them (a circle around a seed case) or in one grid, make a suggestion. Clusters never cross a street
(a topic belongs to one street's centre). Circles come first, biggest first (a hot spot is tighter
than a grid); the cases left over then cluster by grid. The caller leaves out the cases already in a
topic and rejected ones (services/closer/topics.py reads the rows).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from gridloop.geo import distance_m
from schemas.reference import TopicRule

Kind = Literal["radius", "grid"]


@dataclass(frozen=True)
class CaseRow:
    """What a suggestion needs to know about a case."""

    case_id: str
    category: str
    street_id: str | None
    station_id: str
    grid_id: str | None
    lat: float | None
    lon: float | None
    submitted_at: datetime


@dataclass(frozen=True)
class Suggestion:
    """N or more cases of one category in one place: what a supervisor may turn into a topic."""

    key: str
    """Stable for the same cases: the console's form names the suggestion by it."""
    category: str
    street_id: str | None
    kind: Kind
    grid_id: str | None
    """The grid (kind grid), or the seed case's grid (kind radius)."""
    lat: float | None
    lon: float | None
    """The seed case's point (radius) or the cases' mean point (grid)."""
    case_ids: tuple[str, ...]
    """Oldest first."""
    first_at: datetime
    last_at: datetime


def _key(category: str, case_ids: Iterable[str]) -> str:
    return hashlib.sha256("\x00".join([category, *sorted(case_ids)]).encode()).hexdigest()[:16]


def _near(a: CaseRow, b: CaseRow, radius_m: float) -> bool:
    if a.lat is None or a.lon is None or b.lat is None or b.lon is None:
        return False
    return distance_m(a.lat, a.lon, b.lat, b.lon) <= radius_m


def _suggestion(rows: Sequence[CaseRow], kind: Kind, seed: CaseRow | None) -> Suggestion:
    rows = sorted(rows, key=lambda r: (r.submitted_at, r.case_id))
    first = rows[0]
    if seed is not None:
        lat, lon, grid = seed.lat, seed.lon, seed.grid_id
    else:
        points = [(r.lat, r.lon) for r in rows if r.lat is not None and r.lon is not None]
        lat = sum(p[0] for p in points) / len(points) if points else None
        lon = sum(p[1] for p in points) / len(points) if points else None
        grid = first.grid_id
    return Suggestion(
        key=_key(first.category, (r.case_id for r in rows)),
        category=first.category,
        street_id=first.street_id,
        kind=kind,
        grid_id=grid,
        lat=lat,
        lon=lon,
        case_ids=tuple(r.case_id for r in rows),
        first_at=first.submitted_at,
        last_at=rows[-1].submitted_at,
    )


def _circles(rows: list[CaseRow], rule: TopicRule) -> tuple[list[Suggestion], list[CaseRow]]:
    """Greedy: the seed with the most cases within R (ties: the older seed) takes them; repeat while
    a circle holds N. Returns the circles and the cases left."""
    found: list[Suggestion] = []
    left = sorted(rows, key=lambda r: (r.submitted_at, r.case_id))
    while len(left) >= rule.min_cases:
        best: list[CaseRow] = []
        seed: CaseRow | None = None
        for candidate in left:
            members = [r for r in left if r is candidate or _near(candidate, r, rule.radius_m)]
            if len(members) > len(best):
                best, seed = members, candidate
        if len(best) < rule.min_cases:
            break
        found.append(_suggestion(best, "radius", seed))
        taken = {r.case_id for r in best}
        left = [r for r in left if r.case_id not in taken]
    return found, left


def suggest(rows: Iterable[CaseRow], rules: Mapping[str, TopicRule], now: datetime) -> list[Suggestion]:
    """Every suggestion among `rows` (cases not in a topic), biggest first, then the latest."""
    groups: dict[tuple[str, str | None], list[CaseRow]] = defaultdict(list)
    for row in rows:
        rule = rules.get(row.category)
        if rule is None or not now - timedelta(days=rule.window_days) <= row.submitted_at <= now:
            continue
        groups[(row.category, row.street_id)].append(row)
    found: list[Suggestion] = []
    for (category, _street), members in groups.items():
        rule = rules[category]
        circles, left = _circles(members, rule)
        found += circles
        by_grid: dict[str, list[CaseRow]] = defaultdict(list)
        for row in left:
            if row.grid_id is not None:
                by_grid[row.grid_id].append(row)
        found += [_suggestion(g, "grid", None) for g in by_grid.values() if len(g) >= rule.min_cases]
    return sorted(found, key=lambda s: (-len(s.case_ids), -s.last_at.timestamp(), s.key))
