"""The areas whose routing locks a report takes: every grid whose cases it could merge with."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from gridloop.settings import REPO_ROOT
from schemas.reference import Jurisdiction, load_jurisdiction
from services.router.areas import NO_GRID, MergeAreas, lock_key
from services.router.routing import Candidate, ReportFacts, find_duplicate

J: Jurisdiction = load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")
AREAS = MergeAreas(J)
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
# the yh-g1 | yh-g2 border runs from (121.519, 31.329) to (121.5185, 31.345): at 31.336 near 121.5188
NEAR_BORDER_G1 = (31.336, 121.5186)  # in yh-g1, 17 m west of it
NEAR_BORDER_G2 = (31.336, 121.5190)  # in yh-g2, 21 m east of it; 38 m from the point above


def facts(
    lat: float | None, lon: float | None, category: str = "safety_hazard", **extra: object
) -> ReportFacts:
    """A report at a point (50 m duplicate radius unless another category is given)."""
    base = ReportFacts(category, None, lat, lon, None, False, "rider-a", T0)
    return replace(base, **extra)  # type: ignore[arg-type]


def test_a_point_deep_inside_a_grid_is_that_grid_only() -> None:
    """Far from every border, a report's radius touches its own grid alone."""
    assert AREAS.of(facts(31.3395, 121.511)) == {"yh-g1"}
    assert AREAS.of(facts(31.337, 121.540)) == {"yh-g3"}


def test_a_report_near_a_border_takes_the_grid_across_it() -> None:
    """Within its radius of the border, a report could merge with a case anchored across it."""
    assert J.grid_at(*NEAR_BORDER_G1).id == "yh-g1"  # type: ignore[union-attr]
    assert J.grid_at(*NEAR_BORDER_G2).id == "yh-g2"  # type: ignore[union-attr]
    assert AREAS.of(facts(*NEAR_BORDER_G1)) == {"yh-g1", "yh-g2"}
    assert AREAS.of(facts(*NEAR_BORDER_G2)) == {"yh-g1", "yh-g2"}
    # the radius is the category's: a code_damaged report (10 m) there reaches no border
    assert AREAS.of(facts(*NEAR_BORDER_G1, category="code_damaged")) == {"yh-g1"}


def test_a_code_report_takes_its_place_grid_and_its_points_grids() -> None:
    """A code's place gives its grid (same-place merges); a GPS point elsewhere adds the grids there."""
    assert AREAS.of(facts(31.337, 121.540, grid_id="yh-g1", place_id="yh-p01")) == {"yh-g1", "yh-g3"}
    assert AREAS.of(facts(None, None, grid_id="yh-g2", place_id="yh-p06")) == {"yh-g2"}


def test_reports_that_reach_outside_every_grid_take_none() -> None:
    """Outside every grid, or a radius that reaches out of them: the area `none`."""
    # yh-g1's west edge crosses 31.3395 near 121.50586: 25 m outside it, triage, no merge: only `none`
    assert AREAS.of(facts(31.3395, 121.5056)) == {NO_GRID}
    # 23 m inside it: its own grid, and `none` (a case anchored just outside could take it)
    assert AREAS.of(facts(31.3395, 121.5061)) == {"yh-g1", NO_GRID}


def test_reports_that_cannot_merge_take_one_key() -> None:
    """Unknown category, or no grid and no point: triage, with its code's grid or `none` as its key."""
    assert AREAS.of(facts(31.3395, 121.511, category="no_such_category")) == {NO_GRID}
    assert AREAS.of(facts(None, None, category="no_such_category", grid_id="yh-g1")) == {"yh-g1"}
    assert AREAS.of(facts(None, None)) == {NO_GRID}


def test_lock_keys_are_stable_signed_32_bit_numbers() -> None:
    """The same key in every process and release (never hash()): pinned, and each grid its own."""
    assert lock_key("yh-g1") == -547840786
    assert lock_key(NO_GRID) == -483190428
    keys = {lock_key(g) for g in [*J.grids, NO_GRID]}
    assert len(keys) == len(J.grids) + 1
    assert all(-(2**31) <= k < 2**31 for k in keys)


_LATS = st.floats(31.2890, 31.3465)
_LONS = st.floats(121.4340, 121.5490)
_STEP = st.floats(-0.0012, 0.0012)  # up to about 130 m each way


@settings(max_examples=1000, deadline=None)
@given(_LATS, _LONS, _STEP, _STEP, st.sampled_from(["safety_hazard", "gas_hazard", "manhole_cover"]))
def test_two_reports_that_could_merge_share_an_area(
    lat: float, lon: float, dlat: float, dlon: float, category: str
) -> None:
    """Whenever a report would merge into the case another one opens, their lock sets meet: the two
    decisions are serialised, wherever the borders run."""
    first = facts(lat, lon, category)
    second = facts(lat + dlat, lon + dlon, category)
    anchor = Candidate("c1", category, "s", lat, lon, None, T0)
    if find_duplicate(J.categories[category], second, [anchor]) is not None:
        assert AREAS.of(first) & AREAS.of(second)
