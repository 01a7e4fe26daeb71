"""Topic suggestions (services/closer/suggestions.py): N cases, R metres, D days, one grid, one street."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from math import pi

from gridloop.geo import EARTH_RADIUS_M, distance_m
from schemas.reference import TopicRule
from services.closer.suggestions import CaseRow, suggest

NOW = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
METRE_LAT = 180 / (pi * EARTH_RADIUS_M)  # degrees of latitude per metre
RULES = {"shared_bikes": TopicRule(min_cases=3, radius_m=200, window_days=14)}
LAT, LON = 31.3350, 121.5150


def row(
    n: int,
    north_m: float = 0.0,
    days_ago: float = 1.0,
    grid: str | None = "yh-g1",
    category: str = "shared_bikes",
    street: str | None = "yinhang",
) -> CaseRow:
    """Case C{n}, `north_m` metres north of the hot spot, submitted `days_ago` days before NOW."""
    return CaseRow(
        case_id=f"C{n}",
        category=category,
        street_id=street,
        station_id="yh-s1",
        grid_id=grid,
        lat=LAT + north_m * METRE_LAT,
        lon=LON,
        submitted_at=NOW - timedelta(days=days_ago, minutes=n),
    )


def test_the_metre_helper_is_exact_enough() -> None:
    """The tests place cases by metres: 200 m north is 200 m away to a millimetre."""
    assert abs(distance_m(LAT, LON, LAT + 200 * METRE_LAT, LON) - 200) < 0.001


def test_n_minus_one_cases_suggest_nothing_and_n_do() -> None:
    """Two cases within R (in different grids) are no suggestion; the third makes one, oldest first."""
    two = [row(1, grid="yh-g1"), row(2, 50, grid="yh-g2")]
    assert suggest(two, RULES, NOW) == []
    [s] = suggest([*two, row(3, 100, grid="yh-g3")], RULES, NOW)
    assert (s.kind, s.category, s.street_id, s.case_ids) == (
        "radius",
        "shared_bikes",
        "yinhang",
        ("C3", "C2", "C1"),
    )
    assert (s.first_at, s.last_at) == (NOW - timedelta(days=1, minutes=3), NOW - timedelta(days=1, minutes=1))


def test_radius_edge_is_inclusive() -> None:
    """A case at 199.9 m from the seed counts, one at 200.1 m does not (other grids: no grid cluster)."""
    inside = [row(1, grid="a"), row(2, 100, grid="b"), row(3, 199.9, grid="c")]
    assert [s.case_ids for s in suggest(inside, RULES, NOW)] == [("C3", "C2", "C1")]
    outside = [row(1, grid="a"), row(2, -100, grid="b"), row(3, 200.1, grid="c")]
    assert suggest(outside, RULES, NOW) == []


def test_window_edge_is_inclusive_and_future_cases_do_not_count() -> None:
    """A case submitted exactly D days ago counts; one a minute older, or one in the future, does not."""
    rows = [
        row(1),
        row(2, 10),
        CaseRow("C3", "shared_bikes", "yinhang", "yh-s1", "yh-g1", LAT, LON, NOW - timedelta(days=14)),
    ]
    assert [s.case_ids for s in suggest(rows, RULES, NOW)] == [("C3", "C2", "C1")]
    old = CaseRow(
        "C3", "shared_bikes", "yinhang", "yh-s1", "yh-g1", LAT, LON, NOW - timedelta(days=14, minutes=1)
    )
    assert suggest([row(1), row(2, 10), old], RULES, NOW) == []
    future = CaseRow("C3", "shared_bikes", "yinhang", "yh-s1", "yh-g1", LAT, LON, NOW + timedelta(minutes=1))
    assert suggest([row(1), row(2, 10), future], RULES, NOW) == []


def test_one_grid_clusters_cases_far_apart() -> None:
    """Three cases 1 km apart in one grid are a grid suggestion at their mean point."""
    [s] = suggest([row(1, 0), row(2, 1000), row(3, 2000)], RULES, NOW)
    assert (s.kind, s.grid_id, s.case_ids) == ("grid", "yh-g1", ("C3", "C2", "C1"))
    assert s.lat is not None and abs(distance_m(s.lat, LON, LAT + 1000 * METRE_LAT, LON)) < 0.01


def test_cases_without_a_point_or_grid_and_other_categories_and_streets() -> None:
    """No point: only a grid can hold it; other categories have no rule; streets never mix."""
    pointless = CaseRow("C9", "shared_bikes", "yinhang", "yh-s1", None, None, None, NOW - timedelta(hours=1))
    assert suggest([row(1, grid="a"), row(2, 10, grid="b"), pointless], RULES, NOW) == []
    assert (
        suggest(
            [row(1, category="sanitation"), row(2, category="sanitation"), row(3, category="sanitation")],
            RULES,
            NOW,
        )
        == []
    )
    mixed = [row(1), row(2, 10), row(3, 20, street="pengpu")]
    assert suggest(mixed, RULES, NOW) == []


def test_circles_first_then_grids_biggest_first() -> None:
    """Four cases at a hot spot make one circle; three others of the grid, far from it, a grid one; a
    case is in one suggestion only; keys are stable for the same cases."""
    hot = [row(i, i * 10, grid="yh-g2") for i in range(1, 5)]
    spread = [row(5, 3000), row(6, 4000), row(7, 5000)]
    first, second = suggest([*spread, *hot], RULES, NOW)
    assert (first.kind, first.case_ids) == ("radius", ("C4", "C3", "C2", "C1"))
    assert (second.kind, second.grid_id, second.case_ids) == ("grid", "yh-g1", ("C7", "C6", "C5"))
    assert first.lat == hot[3].lat  # the seed: the oldest (C4) of the biggest circle
    again = suggest(list(reversed([*hot, *spread])), RULES, NOW)
    assert [s.key for s in again] == [first.key, second.key]
    assert first.key != second.key and len(first.key) == 16


def test_a_rule_with_other_n_r_d() -> None:
    """N=2, R=50, D=1: two cases 40 m apart yesterday are a suggestion; 60 m apart are not."""
    rules = {"shared_bikes": TopicRule(min_cases=2, radius_m=50, window_days=1)}
    assert [s.case_ids for s in suggest([row(1, 0, 0.5, "a"), row(2, 40, 0.5, "b")], rules, NOW)] == [
        ("C2", "C1")
    ]
    assert suggest([row(1, 0, 0.5, "a"), row(2, 60, 0.5, "b")], rules, NOW) == []
    assert suggest([row(1, 0, 2, "a"), row(2, 40, 0.5, "b")], rules, NOW) == []


def test_defaults_and_the_shipped_rule() -> None:
    """A category without a topic block gets N=3, R=200, D=14; shared_bikes ships its own."""
    assert TopicRule() == TopicRule(min_cases=3, radius_m=200.0, window_days=14.0)
