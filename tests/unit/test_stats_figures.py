"""The assessment figures' arithmetic (services/closer/figures.py): periods, months, rates, medians."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.closer import figures
from services.closer.figures import BadInput, Tally

TZ = "Asia/Shanghai"


def test_a_period_is_whole_local_days() -> None:
    """November in Shanghai runs from 31 October 16:00 UTC to 30 November 16:00 UTC."""
    p = figures.parse_period("2026-11-01", "2026-11-30", date(2026, 12, 2), TZ)
    assert (p.start, p.end, p.days) == (date(2026, 11, 1), date(2026, 11, 30), 30)
    assert (p.lo, p.hi) == (datetime(2026, 10, 31, 16, tzinfo=UTC), datetime(2026, 11, 30, 16, tzinfo=UTC))


def test_no_dates_mean_this_month_so_far() -> None:
    """Neither date: from the first of the month to today."""
    p = figures.parse_period(None, None, date(2026, 12, 2), TZ)
    assert (p.start, p.end) == (date(2026, 12, 1), date(2026, 12, 2))
    assert figures.last_month(date(2026, 1, 15)) == (date(2025, 12, 1), date(2025, 12, 31))
    assert figures.this_month(date(2026, 1, 15)) == (date(2026, 1, 1), date(2026, 1, 15))


@pytest.mark.parametrize(
    ("start", "end", "code"),
    [
        ("2026-11-02", "2026-11-01", "invalid_range"),
        ("2024-12-31", "2026-01-01", "invalid_range"),
        ("2026-02-30", "2026-03-01", "invalid_date"),
        ("yesterday", "2026-03-01", "invalid_date"),
        (None, "2026-03-01", "invalid_range"),
    ],
)
def test_bad_periods(start: str | None, end: str | None, code: str) -> None:
    """Reversed, longer than 366 days, impossible dates and half a period are refused."""
    with pytest.raises(BadInput) as exc:
        figures.parse_period(start, end, date(2026, 12, 2), TZ)
    assert exc.value.code == code


def test_366_days_is_the_longest_period() -> None:
    """A leap year's 366 days are allowed."""
    assert figures.parse_period("2028-01-01", "2028-12-31", date(2029, 1, 1), TZ).days == 366
    with pytest.raises(BadInput):
        figures.check_group("street")
    assert figures.check_group("month") == "month"


def test_months_are_cut_to_the_period() -> None:
    """A period from 15 January to 3 March has three months, the first and last cut."""
    got = figures.months(figures.period_of(date(2026, 1, 15), date(2026, 3, 3), TZ), TZ)
    assert [(m, p.start, p.end) for m, p in got] == [
        ("2026-01", date(2026, 1, 15), date(2026, 1, 31)),
        ("2026-02", date(2026, 2, 1), date(2026, 2, 28)),
        ("2026-03", date(2026, 3, 1), date(2026, 3, 3)),
    ]


def test_rates_means_and_medians() -> None:
    """Rounded to 4 and 2 places; None with nothing to rate."""
    assert (figures.rate(2, 3), figures.rate(0, 4), figures.rate(0, 0)) == (0.6667, 0.0, None)
    assert (figures.mean(7, 2), figures.mean(0, 0)) == (3.5, None)
    assert (figures.median_hours([30, 10, 50]), figures.median_hours([1, 2]), figures.median_hours([])) == (
        30,
        1.5,
        None,
    )
    assert (figures.percent(0.6667), figures.percent(0.5), figures.percent(None)) == ("66.7%", "50%", "—")


def test_a_rows_figures_from_its_tally() -> None:
    """Every figure from the sums; NULL sums count as 0."""
    t = Tally.of(
        "yh-s1",
        {
            "cases": 3,
            "reports": 5,
            "ack_on_time": 2,
            "ack_judged": 3,
            "resolve_on_time": 1,
            "resolve_judged": 4,
            "resolved": 3,
            "reopened": 1,
            "rating_sum": 7,
            "rated": 2,
            "closed": 3,
            "confirmed_fixes": 1,
            "returns": None,
            "extensions": 2,
            "common_issues": 1,
            "nudges": 4,
            "median_hours_to_close": 29.996,
        },
    )
    assert figures.figures(t) == {
        "reports": 5,
        "cases": 3,
        "on_time_ack_rate": 0.6667,
        "on_time_resolve_rate": 0.25,
        "median_hours_to_close": 30.0,
        "reopen_rate": 0.3333,
        "avg_rating": 3.5,
        "returns": 0,
        "extensions": 2,
        "common_issues": 1,
        "nudges": 4,
        "closed": 3,
        "confirmed_fixes": 1,
    }
    assert list(figures.figures(Tally("x"))) == list(figures.FIGURES)
