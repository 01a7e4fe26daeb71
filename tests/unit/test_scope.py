"""gridloop/scope.py: which stations each role sees, and which streets an account belongs to."""

from __future__ import annotations

from functools import cache

import pytest

from gridloop.scope import account_streets, can_see, narrow, oversees, visible_stations, visible_streets
from gridloop.settings import REPO_ROOT
from gridloop.tokens import Principal
from schemas.reference import Jurisdiction, load_jurisdiction
from services.closer import scope as closer_scope
from services.closer.poller import Change

YINHANG = frozenset({"yh-s1", "yh-s2", "yh-s3", "yh-s4", "yh-s5", "yh-centre", "yh-gas"})
PENGPU = frozenset({f"pp-s{i}" for i in range(1, 10)} | {"pp-centre", "pp-gas"})


@cache
def j() -> Jurisdiction:
    """The shipped jurisdiction: 殷行 (the default street) and 彭浦."""
    return load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")


def who(role: str, stations: tuple[str, ...] = (), streets: tuple[str, ...] = ()) -> Principal:
    """A principal as a verified token gives it."""
    return Principal("u", role, stations, streets=streets)  # type: ignore[arg-type]


def test_the_shipped_streets_are_the_ones_these_tests_name() -> None:
    """The sets below are the data's (a station added to a street would change what its centre sees)."""
    assert frozenset(s.id for s in j().stations_of("yinhang")) == YINHANG
    assert frozenset(s.id for s in j().stations_of("pengpu")) == PENGPU
    assert j().default_street_id == "yinhang"


@pytest.mark.parametrize(
    ("role", "stations", "streets", "expected"),
    [
        ("supervisor", ["yh-centre"], [], (("yinhang",), False)),  # a centre belongs to its street
        ("supervisor", ["pp-centre"], [], (("pengpu",), False)),
        ("supervisor", ["yh-centre"], ["pengpu"], (("pengpu",), False)),  # explicit streets win
        ("admin", [], ["pengpu", "yinhang", "pengpu"], (("pengpu", "yinhang"), False)),
        ("admin", [], ["gone", "pengpu"], (("pengpu",), False)),  # a street removed from the data
        ("admin", [], [], (("yinhang",), True)),  # an old admin with neither: the default street, flagged
        ("supervisor", ["gone"], [], (("yinhang",), True)),
        ("staff", ["yh-s1", "pp-s2"], [], (("yinhang", "pengpu"), False)),
        ("staff", [], [], ((), False)),
        ("city", ["yh-centre"], ["pengpu"], ((), False)),  # city belongs to no street: it sees all
    ],
)
def test_account_streets(
    role: str, stations: list[str], streets: list[str], expected: tuple[tuple[str, ...], bool]
) -> None:
    """Explicit streets, else the stations' streets, else (supervisor, admin) the default street."""
    assert account_streets(role, stations, streets, j()) == expected


def test_visible_stations_per_role() -> None:
    """Staff: their stations; supervisor and admin: their streets' stations; city: every station."""
    assert visible_stations(who("staff", ("yh-s1", "gone")), j()) == frozenset({"yh-s1"})
    assert visible_stations(who("supervisor", ("yh-centre",), ("yinhang",)), j()) == YINHANG
    assert visible_stations(who("admin", (), ("pengpu",)), j()) == PENGPU
    assert visible_stations(who("admin", (), ("yinhang", "pengpu")), j()) == YINHANG | PENGPU
    assert visible_stations(who("city"), j()) is None
    # a supervisor token without the streets claim (issued before streets existed) sees nothing
    assert visible_stations(who("supervisor", ("yh-centre",)), j()) == frozenset()


def test_can_see_another_street_is_not_seen() -> None:
    """殷行's centre sees 殷行's stations only; city sees both; a case without a station no one scoped."""
    yh = who("supervisor", ("yh-centre",), ("yinhang",))
    assert can_see(yh, j(), "yh-s3") and not can_see(yh, j(), "pp-s1") and not can_see(yh, j(), None)
    assert can_see(who("city"), j(), "pp-s1") and can_see(who("city"), j(), None)
    assert not can_see(who("staff", ("yh-s1",)), j(), "yh-s2")
    # the closer's name for the rule is the same rule (one copy)
    assert closer_scope.visible_stations is visible_stations and closer_scope.can_see is can_see


def test_visible_streets_narrow_and_oversees() -> None:
    """The streets a header shows, a picked filter kept in scope, and who sees the centre's lists."""
    assert visible_streets(who("city"), j()) == ["yinhang", "pengpu"]
    assert visible_streets(who("supervisor", (), ("pengpu",)), j()) == ["pengpu"]
    assert visible_streets(who("staff", ("pp-s3",)), j()) == ["pengpu"]
    assert narrow(None, ["pp-s1"]) == frozenset({"pp-s1"})
    assert narrow(YINHANG, ["pp-s1", "yh-s1"]) == frozenset({"yh-s1"})
    assert [r for r in ("staff", "supervisor", "admin", "city") if oversees(who(r))] == [
        "supervisor",
        "admin",
        "city",
    ]


def test_a_live_stream_takes_the_changes_of_its_stations() -> None:
    """A street's stream gets a change of any of its stations, or one moved away from them."""
    moved = Change(1, "C1", "transferred", "new", "pp-s1", "yh-s2", 2)
    inside = Change(2, "C2", "acknowledged", "acknowledged", "yh-s1", None, 2)
    elsewhere = Change(3, "C3", "acknowledged", "acknowledged", "pp-s2", None, 2)
    assert [c.id for c in (moved, inside, elsewhere) if c.concerns(YINHANG)] == [1, 2]
    assert [c.id for c in (moved, inside, elsewhere) if c.concerns(None)] == [1, 2, 3]
    assert [c.id for c in (moved, inside, elsewhere) if c.concerns(frozenset({"pp-s2"}))] == [3]
