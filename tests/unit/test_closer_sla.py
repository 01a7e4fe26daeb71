"""SLA arithmetic on the Chinese working-day calendar: holidays, make-up days, nights, weekends, holds."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest

from gridloop.settings import REPO_ROOT
from schemas.reference import load_jurisdiction
from services.closer import sla

SH = ZoneInfo("Asia/Shanghai")
CAL = sla.WorkCalendar("09:00-12:00,13:00-18:00", "Asia/Shanghai")


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    """A Shanghai wall-clock time."""
    return datetime(y, mo, d, h, mi, tzinfo=SH)


def test_the_library_knows_national_day_2026_and_its_make_up_days() -> None:
    """What the calendar says for autumn 2026, which the cases below rely on."""
    assert [chinese_calendar.is_workday(date(2026, 10, d)) for d in range(1, 8)] == [False] * 7
    assert chinese_calendar.is_workday(date(2026, 9, 20))  # a Sunday, worked for the holiday
    assert chinese_calendar.is_workday(date(2026, 10, 10))  # a Saturday, worked for the holiday
    assert not chinese_calendar.is_workday(date(2026, 10, 11))
    assert not chinese_calendar.is_workday(date(2026, 9, 25))  # Mid-autumn


def test_deadline_jumps_the_national_day_holiday() -> None:
    """Submitted the evening before National Day: the clock runs 1 h, stops 7 days, resumes on the 8th."""
    start = at(2026, 9, 30, 17)
    assert CAL.add(start, 4) == at(2026, 10, 8, 12)
    # 1 h (30th) + 8 (8th) + 8 (9th) + 8 (Saturday 10th, a make-up working day) + 8 (12th) + 7 (13th)
    assert CAL.add(start, 40) == at(2026, 10, 13, 17)
    assert CAL.between(start, at(2026, 10, 8, 12)) == pytest.approx(4)


def test_make_up_sunday_counts_and_ordinary_sunday_does_not() -> None:
    """20 Sep 2026 is a Sunday worked for National Day; 11 Oct is an ordinary Sunday."""
    assert CAL.add(at(2026, 9, 19, 10), 4) == at(2026, 9, 20, 14)
    assert CAL.add(at(2026, 10, 11, 10), 4) == at(2026, 10, 12, 14)


def test_nights_weekends_and_the_lunch_break() -> None:
    """Friday night waits for Monday; the lunch hour does not count; a start inside hours counts at once."""
    assert CAL.add(at(2026, 11, 20, 20), 2) == at(2026, 11, 23, 11)
    assert CAL.add(at(2026, 11, 23, 11, 30), 1) == at(2026, 11, 23, 13, 30)
    assert CAL.add(at(2026, 11, 23, 12, 30), 0.5) == at(2026, 11, 23, 13, 30)
    assert CAL.add(at(2026, 11, 23, 17), 1) == at(2026, 11, 23, 18)  # exactly at closing time, not next day
    assert CAL.between(at(2026, 11, 20, 17), at(2026, 11, 23, 10)) == pytest.approx(2)
    assert CAL.between(at(2026, 11, 23, 10), at(2026, 11, 20, 17)) == 0.0


def test_extensions_move_only_the_resolve_deadline() -> None:
    """Two approved extensions add working hours to the resolve deadline; sign-for is unchanged."""
    start = at(2026, 11, 23, 9)
    base = sla.plan(CAL, start, 2, 8)
    extended = sla.plan(CAL, start, 2, 8, extension_hours=16)
    assert base.resolve_due == at(2026, 11, 23, 18)
    assert extended.resolve_due == at(2026, 11, 25, 18)
    assert extended.ack_due == base.ack_due == at(2026, 11, 23, 11)
    # the yellow point is 80 % of the whole allowed time, extensions included: 19.2 h
    assert extended.resolve_warn == at(2026, 11, 25, 13, 12)


def test_a_hold_stops_the_clock() -> None:
    """A hold from Monday 10:00 to Tuesday 10:00 pushes an 8 h deadline to Tuesday evening."""
    start = at(2026, 11, 23, 9)
    hold = [(at(2026, 11, 23, 10), at(2026, 11, 24, 10))]
    p = sla.plan(CAL, start, 8, 16, pauses=hold)
    assert p.ack_due == at(2026, 11, 24, 18)
    assert p.ack_warn == at(2026, 11, 24, 16, 24)
    assert CAL.between(start, at(2026, 11, 24, 11), hold) == pytest.approx(2)
    # a hold over a weekend costs nothing extra; one starting before submission is ignored for the start
    assert CAL.add(at(2026, 11, 20, 17), 2, [(at(2026, 11, 21, 0), at(2026, 11, 22, 23))]) == at(
        2026, 11, 23, 10
    )
    assert CAL.add(at(2026, 11, 23, 9), 0, [(at(2026, 11, 23, 8), at(2026, 11, 23, 11))]) == at(
        2026, 11, 23, 11
    )


def test_colours_green_yellow_red() -> None:
    """Green before 80 %, yellow from 80 %, red from the deadline on; no deadline is green."""
    p = sla.plan(CAL, at(2026, 11, 23, 9), 10, 20)
    assert (p.ack_warn, p.ack_due) == (at(2026, 11, 23, 18), at(2026, 11, 24, 11))
    assert sla.colour(p.ack_due, p.ack_warn, at(2026, 11, 23, 17)) == "green"
    assert sla.colour(p.ack_due, p.ack_warn, at(2026, 11, 23, 18)) == "yellow"
    assert sla.colour(p.ack_due, p.ack_warn, at(2026, 11, 24, 10, 59)) == "yellow"
    assert sla.colour(p.ack_due, p.ack_warn, at(2026, 11, 24, 11)) == "red"
    assert sla.colour(None, None, at(2030, 1, 1, 0)) == "green"


def test_budgets_come_from_the_category_and_priority() -> None:
    """The category's SLA policy per priority; an unknown category gets the fallback."""
    j = load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")
    hazard = j.categories["safety_hazard"]
    assert sla.budget(hazard, "urgent") == sla.Budget(
        hazard.sla.ack_hours["urgent"], hazard.sla.resolve_hours["urgent"]
    )
    assert sla.budget(None, "normal") == sla.Budget(sla.FALLBACK_ACK_HOURS, sla.FALLBACK_RESOLVE_HOURS)


def test_the_year_boundary_2026_2027_skips_new_year_estimated_off() -> None:
    """Past chinese_calendar 1.11's data the estimate still knows 1 January 2027 (a Friday) is off:
    1 h on 31 December, then Monday 4 January (it used to count the 1st as a working day)."""
    assert CAL.add(at(2026, 12, 31, 17), 2) == at(2027, 1, 4, 10)
    assert not CAL.is_workday(date(2027, 1, 1))
    assert CAL.is_workday(date(2027, 1, 4))
    assert CAL.between(at(2026, 12, 31, 17), at(2027, 1, 4, 10)) == pytest.approx(2)


@pytest.mark.parametrize("bad", ["", "18:00-09:00", "09:00-12:00,11:00-13:00", "nine-five"])
def test_bad_working_hours_are_refused(bad: str) -> None:
    """Working hours that cannot be meant are a clear configuration error."""
    with pytest.raises(ValueError):
        sla.parse_hours(bad)


def test_other_working_hours_are_configurable() -> None:
    """An 08:30-11:30, 13:30-17:30 day (7 h) gives other deadlines."""
    cal = sla.WorkCalendar("08:30-11:30,13:30-17:30")
    assert cal.add(at(2026, 11, 23, 8, 30), 7) == at(2026, 11, 23, 17, 30)
    assert cal.add(at(2026, 11, 23, 8, 30), 7.5) == at(2026, 11, 24, 9)
