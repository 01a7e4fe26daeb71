"""Which areas a report's routing decision may read or change: the keys of the routing locks.

Pure (geometry, no I/O). Two decisions must be serialised when one could see the case the other
opens or changes (``routing.find_duplicate``); otherwise two replicas could both open a case for one
hazard. An area is a grid id, or ``none`` for the land outside every grid. A case's anchor is its
first report's place and point, and another report of its category meets it when:

- it is at the same place: both reports carry the place's grid (``facts.grid_id``, the code's place,
  fixed when the place was created), so both take that grid;
- its point lies within the category's radius: the anchor is then inside the report's bounding box
  (``routing.bounding_box``, the box ``index.nearby`` searches). The opening report took every grid
  covering its own point (and ``none`` when its point is outside every grid); the later report takes
  every grid its box touches (and ``none`` when the box reaches outside them), so the two share the
  grid (or ``none``) holding the anchor. This is how a merge crosses a grid border: a report near
  the border of A merges into a case anchored in B, and takes B's lock too;
- a ``+1``: honoured only at the same place or within the radius, so one of the two above.

The anchor's own grid need not be the case's grid (a code report whose GPS point lies in the next
grid): areas follow points and places, never the case's ``grid_id``. A report that cannot merge
(unknown category, no grid: triage) still takes one key, its code's grid or ``none``, so replicas
deciding the same such report are ordered too.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

import shapely

from schemas.reference import Jurisdiction
from services.router.routing import ReportFacts, bounding_box, place

NO_GRID = "none"
"""The area outside every grid, and the key of reports with no grid (as on `reports.submitted`)."""


def lock_key(area: str) -> int:
    """A stable signed 32-bit key for an area (blake2b of its name: the same in every process and
    release, unlike ``hash()``); two areas sharing a key only serialise more, never less."""
    return int.from_bytes(hashlib.blake2b(area.encode(), digest_size=4).digest(), "big", signed=True)


class MergeAreas:
    """The areas of reports under one jurisdiction (its grid geometry indexed once)."""

    def __init__(self, jurisdiction: Jurisdiction) -> None:
        self.j = jurisdiction

    @cached_property
    def _land(self) -> shapely.Geometry:
        """Every grid as one prepared shape: a box it does not cover reaches outside every grid."""
        land = shapely.union_all([g.shape for g in self.j.grid_index.grids])
        shapely.prepare(land)
        return land

    def of(self, facts: ReportFacts) -> frozenset[str]:
        """The areas a report's decision may read or change (see the module's docstring)."""
        areas: set[str] = set()
        if facts.grid_id:
            areas.add(facts.grid_id)  # its code's place: same-place merges, its `known_place` row
        where = place(self.j, facts)
        category = self.j.categories.get(facts.category)
        if where.grid_id is not None and category is not None:  # otherwise triage: it merges nowhere
            areas.add(where.grid_id)
            if facts.lat is not None and facts.lon is not None:
                lat0, lat1, lon0, lon1 = bounding_box(facts.lat, facts.lon, category.dup_radius_m)
                near = shapely.box(lon0, lat0, lon1, lat1)  # a third of shapely.geometry.box's cost
                index = self.j.grid_index
                areas.update(index.grids[int(i)].id for i in index.tree.query(near, predicate="intersects"))
                if not self._land.covers(near):
                    areas.add(NO_GRID)
        return frozenset(areas or (NO_GRID,))
