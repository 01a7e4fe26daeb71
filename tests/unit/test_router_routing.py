"""Pure routing over both streets: placement, border rule, rules, triage, duplicates, priority."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, MultiLineString

from gridloop.settings import REPO_ROOT
from schemas.reference import GridIndex, Jurisdiction, load_jurisdiction
from services.router.routing import (
    Candidate,
    ReportFacts,
    assess,
    decide,
    distance_m,
    find_duplicate,
    is_common_issue,
    is_recurring,
    priority_for,
    reason_text,
)

J: Jurisdiction = load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def facts(
    category: str = "manhole_cover",
    lat: float | None = None,
    lon: float | None = None,
    grid_id: str | None = None,
    **extra: object,
) -> ReportFacts:
    """A report at a point (or a code's grid) with defaults for the rest."""
    base = ReportFacts(
        category=category,
        grid_id=grid_id,
        lat=lat,
        lon=lon,
        place_id=None,
        danger_now=False,
        rider_ref="rider-a",
        submitted_at=T0,
    )
    return replace(base, **extra)  # type: ignore[arg-type]


# (what, category, lat, lon, decision, grid, station, rule)
ROUTES = [
    # 殷行街道: inside each grid
    ("yh inside g1", "manhole_cover", 31.3395, 121.511, "open", "yh-g1", "yh-s1", None),
    ("yh inside g2", "sanitation", 31.337, 121.525, "open", "yh-g2", "yh-s2", None),
    ("yh inside g3", "fire_lane_blocked", 31.337, 121.540, "open", "yh-g3", "yh-s3", None),
    ("yh inside g4", "ebike_flying_wire", 31.320, 121.515, "open", "yh-g4", "yh-s4", None),
    ("yh inside g5", "other", 31.322, 121.535, "open", "yh-g5", "yh-s5", None),
    # on borders: shared corners are exactly on every grid's border; the lowest id wins
    ("yh corner g1/g2/g4", "manhole_cover", 31.329, 121.519, "open", "yh-g1", "yh-s1", None),
    ("yh corner g2/g3/g5", "manhole_cover", 31.3296, 121.532, "open", "yh-g2", "yh-s2", None),
    ("yh corner g4/g5", "sanitation", 31.322, 121.5245, "open", "yh-g4", "yh-s4", None),
    ("yh corner g2/g4/g5", "sanitation", 31.3293, 121.525, "open", "yh-g2", "yh-s2", None),
    # outside: triage at the nearest street's centre
    ("yh north of the street", "manhole_cover", 31.360, 121.520, "triage", None, "yh-centre", None),
    ("far away (People's Square)", "manhole_cover", 31.2304, 121.4737, "triage", None, "pp-centre", None),
    # rule overrides
    ("yh gas, street-wide rule", "gas_hazard", 31.337, 121.540, "open", "yh-g3", "yh-gas", "yh-r1"),
    ("yh bikes in g1, grid rule", "shared_bikes", 31.3395, 121.511, "open", "yh-g1", "yh-s2", "yh-r3"),
    ("yh bikes in g3, no rule", "shared_bikes", 31.337, 121.540, "open", "yh-g3", "yh-s3", None),
    ("yh damaged code to centre", "code_damaged", 31.320, 121.515, "open", "yh-g4", "yh-centre", "yh-r2"),
    # unknown category: triage at that street's centre even inside a grid
    ("yh unknown category", "ufo_landing", 31.3395, 121.511, "triage", "yh-g1", "yh-centre", None),
    # 彭浦新村街道
    ("pp inside g1", "manhole_cover", 31.310, 121.440, "open", "pp-g1", "pp-s1", None),
    ("pp inside g5", "sanitation", 31.302, 121.450, "open", "pp-g5", "pp-s5", None),
    ("pp inside g9", "other", 31.294, 121.460, "open", "pp-g9", "pp-s9", None),
    ("pp corner g1/g2/g4/g5", "other", 31.3064, 121.445, "open", "pp-g1", "pp-s1", None),
    ("pp corner g5/g6/g8/g9", "other", 31.2982, 121.4547, "open", "pp-g5", "pp-s5", None),
    ("pp corner g3/g6", "other", 31.3066, 121.465, "open", "pp-g3", "pp-s3", None),
    ("pp south of the street", "other", 31.285, 121.450, "triage", None, "pp-centre", None),
    ("pp gas, street-wide rule", "gas_hazard", 31.294, 121.460, "open", "pp-g9", "pp-gas", "pp-r1"),
    ("pp damaged code to centre", "code_damaged", 31.292, 121.440, "open", "pp-g7", "pp-centre", "pp-r2"),
    ("pp bikes: yh-r3 is not pp's", "shared_bikes", 31.310, 121.440, "open", "pp-g1", "pp-s1", None),
    ("pp unknown category", "ufo_landing", 31.302, 121.450, "triage", "pp-g5", "pp-centre", None),
]


@pytest.mark.parametrize(
    ("what", "category", "lat", "lon", "decision", "grid", "station", "rule"),
    ROUTES,
    ids=[r[0] for r in ROUTES],
)
def test_route_table(
    what: str,
    category: str,
    lat: float,
    lon: float,
    decision: str,
    grid: str | None,
    station: str,
    rule: str | None,
) -> None:
    """Each row: a report at a point routes to the expected grid, station and rule, with reasons."""
    result = decide(J, facts(category, lat, lon), [])
    assert (result.decision, result.grid_id, result.station_id, result.rule_id) == (
        decision,
        grid,
        station,
        rule,
    )
    assert result.merge_case_id is None
    assert result.reasons and all(r.zh and r.en for r in result.reasons)
    if rule is not None:
        assert rule in reason_text(result.reasons, "en")
    if decision == "triage":
        assert "triage" in reason_text(result.reasons, "en")
        assert "人工分拨" in reason_text(result.reasons)


def test_shared_corners_are_on_every_neighbours_border() -> None:
    """The table's corner rows really are border points: several grids cover each."""
    for what, _, lat, lon, _, grid, _, _ in ROUTES:
        if "corner" in what:
            covering = [g.id for g in J.grid_index.covering(lat, lon)]
            assert len(covering) >= 2, what
            assert covering[0] == grid


def test_code_place_grid_wins_over_point() -> None:
    """A code's place gives the grid, even when the rider's GPS drifts into the next grid."""
    result = decide(
        J, facts("manhole_cover", 31.337, 121.525, grid_id="yh-g1", place_name="开鲁新村一村北门"), []
    )
    assert (result.grid_id, result.station_id) == ("yh-g1", "yh-s1")
    assert "开鲁新村一村北门" in reason_text(result.reasons)


def test_no_location_goes_to_triage_at_the_first_street() -> None:
    """No code and no point: triage at the default street's centre, never dropped."""
    result = decide(J, facts("manhole_cover"), [])
    assert (result.decision, result.station_id) == ("triage", "yh-centre")
    assert "no report code and no location" in reason_text(result.reasons, "en")


# --- placement properties -------------------------------------------------------------------

LAT = st.floats(31.28, 31.36, allow_nan=False)
LON = st.floats(121.42, 121.56, allow_nan=False)


def _oracle(j: Jurisdiction, lat: float, lon: float) -> str | None:
    """Brute force: every grid that covers the point; the border rule picks the lowest id."""
    ids = sorted(g.id for g in j.grids.values() if g.covers(lat, lon))
    return ids[0] if ids else None


@settings(max_examples=400, deadline=None)
@given(lat=LAT, lon=LON)
def test_grid_at_matches_brute_force(lat: float, lon: float) -> None:
    """The STRtree lookup finds exactly what a scan of every polygon finds, border rule included."""
    found = J.grid_at(lat, lon)
    assert (found.id if found else None) == _oracle(J, lat, lon)


def _shared_borders() -> list[tuple[str, str, LineString]]:
    borders = []
    for a, b in combinations(sorted(J.grids.values(), key=lambda g: g.id), 2):
        shared = a.shape.boundary.intersection(b.shape.boundary)
        parts = shared.geoms if isinstance(shared, MultiLineString) else [shared]
        borders += [(a.id, b.id, p) for p in parts if isinstance(p, LineString) and p.length > 0]
    return borders


SHARED = _shared_borders()


def test_both_streets_have_shared_borders() -> None:
    """The property below has material: grids of each street share borders."""
    assert {a[:2] for a, _, _ in SHARED} == {"yh", "pp"}
    assert len(SHARED) >= 12


@settings(max_examples=300, deadline=None)
@given(border=st.sampled_from(SHARED), t=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_point_on_a_shared_border_lands_in_exactly_one_neighbour(
    border: tuple[str, str, LineString], t: float, seed: int
) -> None:
    """A border point is never unplaced, lands in one of the two grids, whatever the grids' order."""
    a, b, line = border
    point = line.interpolate(t, normalized=True)
    lat, lon = point.y, point.x
    found = J.grid_at(lat, lon)
    assert found is not None
    covering = {g.id for g in J.grid_index.covering(lat, lon)}
    assert found.id in covering and covering & {a, b}
    assert found.id == min(covering)
    shuffled = list(J.grids.values())
    random.Random(seed).shuffle(shuffled)
    again = GridIndex(shuffled).grid_at(lat, lon)
    assert again is not None and again.id == found.id


@settings(max_examples=200, deadline=None)
@given(lat=LAT, lon=LON, category=st.sampled_from([*sorted(J.categories), "ufo_landing"]))
def test_every_report_gets_a_station(lat: float, lon: float, category: str) -> None:
    """Whatever the point and category, routing answers with a real station: never dropped."""
    result = decide(J, facts(category, lat, lon), [])
    assert result.station_id in J.stations
    if result.decision == "triage":
        assert J.stations[result.station_id].kind == "centre"
    else:
        assert result.grid_id == _oracle(J, lat, lon)


# --- duplicates, common issue, priority ----------------------------------------------------


def cand(case_id: str, lat: float, lon: float, **extra: object) -> Candidate:
    """An open manhole case at a point, last reported at T0."""
    base = Candidate(case_id, "manhole_cover", "yh-s1", lat, lon, None, T0, opened_at=T0)
    return replace(base, **extra)  # type: ignore[arg-type]


def test_merge_into_nearest_open_case_within_radius() -> None:
    """Nearest open case of the category within its radius (manhole: 30 m) takes the report."""
    here = facts("manhole_cover", 31.3395, 121.511)
    near = cand("c_near", 31.3396, 121.511)  # ~11 m
    nearer = cand("c_nearer", 31.33955, 121.511)  # ~6 m
    far = cand("c_far", 31.3400, 121.511)  # ~56 m
    result = decide(J, here, [far, near, nearer])
    assert (result.decision, result.merge_case_id, result.station_id) == ("merge", "c_nearer", "yh-s1")
    assert result.distance_m is not None and 5 < result.distance_m < 7
    assert "c_nearer" in reason_text(result.reasons, "en")
    assert decide(J, here, [far]).decision == "open"


@pytest.mark.parametrize(
    ("what", "candidate", "merges"),
    [
        ("another category", cand("c1", 31.3395, 121.511, category="sanitation"), False),
        ("closed", cand("c1", 31.3395, 121.511, open=False), False),
        (
            "outside the window (168 h)",
            cand("c1", 31.3395, 121.511, last_report_at=T0 - timedelta(hours=169)),
            False,
        ),
        ("inside the window", cand("c1", 31.3395, 121.511, last_report_at=T0 - timedelta(hours=167)), True),
        (
            "a later report arrived first",
            cand("c1", 31.3395, 121.511, last_report_at=T0 + timedelta(hours=1)),
            True,
        ),
        ("same place, no point", cand("c1", None, None, place_id="yh-p01"), True),  # type: ignore[arg-type]
        ("no point to compare", cand("c1", None, None), False),  # type: ignore[arg-type]
    ],
)
def test_duplicate_conditions(what: str, candidate: Candidate, merges: bool) -> None:
    """Category, openness, window and place decide whether a case is a duplicate."""
    here = facts("manhole_cover", 31.3395, 121.511, place_id="yh-p01")
    category = J.categories["manhole_cover"]
    assert (find_duplicate(category, here, [candidate]) is not None) is merges, what


def test_tie_goes_to_the_lower_case_id() -> None:
    """Two cases at the same distance: the lower id wins, so every replica picks the same one."""
    here = facts("manhole_cover", 31.3395, 121.511)
    found = find_duplicate(
        J.categories["manhole_cover"], here, [cand("c_b", 31.3396, 121.511), cand("c_a", 31.3396, 121.511)]
    )
    assert found is not None and found[0].case_id == "c_a"


def test_merge_goes_to_the_cases_station_across_a_border() -> None:
    """A report just over the border merges into the neighbour's case and goes to its station."""
    # the g1/g2/g4 corner belongs to yh-g1; a case 10 m east lies in yh-g2
    here = facts("manhole_cover", 31.329, 121.519)
    other = cand("c_g2", 31.329, 121.5191, station_id="yh-s2")
    result = decide(J, here, [other])
    assert (result.decision, result.grid_id, result.station_id) == ("merge", "yh-g1", "yh-s2")


def test_plus_one_merges_into_the_chosen_open_case() -> None:
    """'+1' on an open case of the category within its radius merges there, before a nearer case."""
    here = facts("manhole_cover", 31.3395, 121.511, plus_one_case_id="c_chosen")
    chosen = cand("c_chosen", 31.3397, 121.511)  # ~22 m, inside the manhole radius (30 m)
    nearer = cand("c_nearer", 31.33955, 121.511)  # ~6 m
    result = decide(J, here, [nearer, chosen])
    assert (result.decision, result.merge_case_id) == ("merge", "c_chosen")
    assert "the rider chose +1 on case c_chosen" in reason_text(result.reasons, "en")
    closed = decide(J, here, [replace(chosen, open=False)])
    assert closed.decision == "open"
    assert "no longer open" in reason_text(closed.reasons, "en")


PENGPU = (31.3108, 121.4400)  # in 彭浦 pp-g1, about 7.5 km from 殷行 yh-g1


@pytest.mark.parametrize(
    ("what", "chosen", "reason"),
    [
        ("beyond the radius", cand("c_x", 31.3400, 121.511), "not within 30 m"),  # ~56 m
        ("another category at the point", cand("c_x", 31.3395, 121.511, category="sanitation"), "category"),
        (
            "a fire-lane case in 彭浦, 7 km away (issue 12)",
            cand("c_x", *PENGPU, category="fire_lane_blocked", station_id="pp-s1"),
            "category",
        ),
        ("a manhole case in 彭浦", cand("c_x", *PENGPU, station_id="pp-s1"), "not within 30 m"),
        ("no point to compare", cand("c_x", None, None), "not within 30 m"),  # type: ignore[arg-type]
    ],
)
def test_plus_one_elsewhere_is_routed_as_if_there_were_none(
    what: str, chosen: Candidate, reason: str
) -> None:
    """A '+1' on a case of another category or outside its radius: a new case, or the usual duplicate."""
    here = facts("manhole_cover", 31.3395, 121.511, plus_one_case_id="c_x")
    alone = decide(J, here, [chosen])
    assert (alone.decision, alone.merge_case_id, alone.station_id) == ("open", None, "yh-s1"), what
    assert reason in reason_text(alone.reasons, "en"), what
    near = cand("c_near", 31.3396, 121.511)  # ~11 m: the normal duplicate still merges
    usual = decide(J, here, [chosen, near])
    assert (usual.decision, usual.merge_case_id) == ("merge", "c_near"), what
    assert "+1 on case" not in reason_text(usual.reasons, "en"), what


def test_common_issue_needs_three_distinct_riders_within_24h() -> None:
    """Three distinct riders in any 24 h window; repeats by one rider and anonymous reports don't count."""
    h = timedelta(hours=1)
    assert is_common_issue([("a", T0), ("b", T0 + h), ("c", T0 + 2 * h)])
    assert not is_common_issue([("a", T0), ("a", T0 + h), ("b", T0 + 2 * h), (None, T0), (None, T0)])
    assert not is_common_issue([("a", T0), ("b", T0 + 12 * h), ("c", T0 + 25 * h)])
    assert is_common_issue([("a", T0), ("b", T0 + 12 * h), ("c", T0 + 25 * h), ("d", T0 + 30 * h)])


@settings(max_examples=200, deadline=None)
@given(
    reports=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d", None]), st.integers(0, 72 * 60)), max_size=8
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_common_issue_is_independent_of_order(reports: list[tuple[str | None, int]], seed: int) -> None:
    """The flag depends on who reported when, not on the order the reports arrive in."""
    timed = [(r, T0 + timedelta(minutes=m)) for r, m in reports]
    shuffled = list(timed)
    random.Random(seed).shuffle(shuffled)
    assert is_common_issue(timed) == is_common_issue(shuffled)


@pytest.mark.parametrize(
    ("category", "danger", "common", "recurring", "expected"),
    [
        ("sanitation", False, False, False, "normal"),
        ("sanitation", False, True, False, "high"),
        ("sanitation", False, True, True, "urgent"),
        ("sanitation", True, False, False, "urgent"),
        ("fire_lane_blocked", False, False, False, "high"),
        ("fire_lane_blocked", False, False, True, "urgent"),
        ("manhole_cover", False, True, True, "urgent"),
        (None, False, False, False, "normal"),
    ],
)
def test_priority(category: str | None, danger: bool, common: bool, recurring: bool, expected: str) -> None:
    """Category default; danger now is urgent; common issue and recurrence raise one step each."""
    cat = J.categories[category] if category else None
    assert priority_for(cat, danger, common, recurring) == expected


def test_recurring_hazard_same_place_within_30_days() -> None:
    """A closed case of the category at this place 10 days ago makes it recurring; 31 days or rejected not."""
    category = J.categories["sanitation"]
    here = facts("sanitation", 31.3395, 121.511, place_id="yh-p01")
    old = cand(
        "c_old",
        31.3395,
        121.511,
        category="sanitation",
        open=False,
        status="closed",
        opened_at=T0 - timedelta(days=10),
    )
    assert is_recurring(category, here, [old], exclude_case="c_new") == old
    assert is_recurring(category, here, [replace(old, opened_at=T0 - timedelta(days=31))], "c_new") is None
    assert is_recurring(category, here, [replace(old, status="rejected")], "c_new") is None
    assert is_recurring(category, here, [old], exclude_case="c_old") is None
    standing = assess(category, here, 1, False, old)
    assert (standing.priority, standing.recurring) == ("high", True)
    assert "recurring" in reason_text(standing.reasons, "en")


def test_distance_is_metres() -> None:
    """0.001 degrees of latitude is about 111 m."""
    assert 110 < distance_m(31.0, 121.0, 31.001, 121.0) < 112
