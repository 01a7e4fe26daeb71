"""The transition table, exhaustively: every state × action × role, its guards and its input checks."""

from __future__ import annotations

import itertools

import pytest

from schemas.cases import FINAL_STATUSES, OPEN_STATUSES, CaseStatus
from services.closer import transitions
from services.closer.transitions import (
    ACTIONS,
    ACTORS,
    MAX_EXTENSIONS,
    OPEN,
    STATES,
    TABLE,
    Actor,
    Facts,
    Refused,
    Request,
    allowed_actions,
    decide,
)

ACTIVE = {"new", "acknowledged", "dispatched", "returned"}
SAME = "(unchanged)"
STATIONS = {"yh-s1", "yh-s2", "yh-s3"}
# the contract, written out independently of the table: action -> (from states, to state, who)
EXPECTED: dict[str, tuple[set[str], str, set[Actor]]] = {
    "acknowledge": ({"new"}, "acknowledged", {"staff", "supervisor"}),
    "dispatch": ({"acknowledged"}, "dispatched", {"staff", "supervisor"}),
    "resolve": ({"dispatched"}, "resolved", {"staff", "supervisor"}),
    "return": ({"new", "acknowledged"}, "returned", {"staff"}),
    "transfer": ({"new", "acknowledged"}, "new", {"staff", "supervisor"}),
    "request_extension": ({"acknowledged", "dispatched"}, SAME, {"staff"}),
    "approve_extension": ({"acknowledged", "dispatched", "returned", "on_hold"}, SAME, {"supervisor"}),
    "deny_extension": ({"acknowledged", "dispatched", "returned", "on_hold"}, SAME, {"supervisor"}),
    "triage": ({"new"}, "new", {"supervisor"}),
    "reassign": ({"returned"}, "new", {"supervisor"}),
    "send_back": ({"returned"}, "acknowledged", {"supervisor"}),  # back where it was returned from
    "hold": (ACTIVE, "on_hold", {"supervisor"}),
    "release": ({"on_hold"}, "dispatched", {"supervisor"}),  # back where it was held from
    "reject": (ACTIVE | {"on_hold"}, "rejected", {"supervisor"}),
    "escalate": (ACTIVE, SAME, {"system"}),
    "confirm": ({"resolved"}, "closed", {"system"}),
    "auto_close": ({"resolved"}, "closed", {"system"}),
    "reopen": ({"resolved"}, "dispatched", {"system"}),
}


def facts_for(status: str, action: str) -> Facts:
    """A case in this state with whatever the action's own precondition needs."""
    return Facts(
        status=status,
        station_id="yh-s1",
        triage=action == "triage",
        extension_pending=action in ("approve_extension", "deny_extension"),
        returned_from="acknowledged",
        held_from="dispatched",
        needs_after_photo=True,
    )


def full_request(action: str) -> Request:
    """A request with every input an action may need, valid."""
    reason = {"return": "wrong_area", "reject": "duplicate"}.get(action)
    return Request(
        action, note="说明", assignee="张三", to_station="yh-s2", reason=reason, hours=8, has_photo=True
    )


def test_the_table_covers_exactly_the_contract() -> None:
    """Every action in the table is in the contract and the other way round."""
    assert set(ACTIONS) == set(EXPECTED)


@pytest.mark.parametrize(("status", "action", "who"), list(itertools.product(STATES, ACTIONS, ACTORS)))
def test_every_state_action_role(status: str, action: str, who: Actor) -> None:
    """Allowed: the right next state. Wrong role: 403. Wrong state: 409 naming the allowed actions."""
    sources, target, actors = EXPECTED[action]
    f = facts_for(status, action)
    if who not in actors:
        with pytest.raises(Refused) as refused:
            decide(f, who, full_request(action), STATIONS)
        assert refused.value.status == 403
        assert action not in refused.value.allowed
    elif status not in sources:
        with pytest.raises(Refused) as refused:
            decide(f, who, full_request(action), STATIONS)
        assert refused.value.status == 409 and refused.value.code == "transition_not_allowed"
        allowed = allowed_actions(f, who)
        assert refused.value.allowed == allowed
        assert action not in allowed
        for name in allowed:
            assert name in refused.value.message
    else:
        outcome = decide(f, who, full_request(action), STATIONS)
        assert outcome.status == (status if target == SAME else target)
        assert outcome.event.startswith("case.")
        assert action in allowed_actions(f, who)


def test_final_states_allow_nothing() -> None:
    """Closed and rejected are final for everyone."""
    for status, who in itertools.product(("closed", "rejected"), ACTORS):
        assert allowed_actions(Facts(status=status, station_id="yh-s1"), who) == []


def test_admin_takes_no_case_action() -> None:
    """Admins manage accounts; they do not work cases."""
    for status in STATES:
        assert allowed_actions(facts_for(status, "x"), "admin") == []


def test_a_case_in_triage_waits_for_the_centre() -> None:
    """Staff cannot sign for, return or transfer a triage case; a supervisor triages it to a station."""
    f = Facts(status="new", station_id="yh-centre", triage=True)
    assert allowed_actions(f, "staff") == []
    assert "triage" in allowed_actions(f, "supervisor")
    assert "acknowledge" not in allowed_actions(f, "supervisor")
    assert "triage" not in allowed_actions(Facts(status="new", station_id="yh-s1"), "supervisor")


def test_no_ping_pong_after_two_moves() -> None:
    """After two returns or transfers, staff can no longer move the case; a supervisor still can."""
    once = Facts(status="new", station_id="yh-s1", moves=1)
    twice = Facts(status="new", station_id="yh-s1", moves=2)
    assert {"return", "transfer"} <= set(allowed_actions(once, "staff"))
    assert not {"return", "transfer"} & set(allowed_actions(twice, "staff"))
    with pytest.raises(Refused) as refused:
        decide(twice, "staff", full_request("return"), STATIONS)
    assert refused.value.status == 409 and "supervisor" in refused.value.message
    assert decide(twice, "supervisor", full_request("transfer"), STATIONS).status == "new"
    assert "acknowledge" in allowed_actions(twice, "staff")  # it can still be worked


def test_extensions_at_most_two_and_one_at_a_time() -> None:
    """A pending request blocks another; after two granted, no more."""
    f = Facts(status="dispatched", station_id="yh-s1")
    assert "request_extension" in allowed_actions(f, "staff")
    pending = Facts(status="dispatched", station_id="yh-s1", extension_pending=True)
    assert "request_extension" not in allowed_actions(pending, "staff")
    assert {"approve_extension", "deny_extension"} <= set(allowed_actions(pending, "supervisor"))
    spent = Facts(status="dispatched", station_id="yh-s1", extensions_granted=MAX_EXTENSIONS)
    assert "request_extension" not in allowed_actions(spent, "staff")
    assert "approve_extension" not in allowed_actions(f, "supervisor")


@pytest.mark.parametrize(
    ("action", "status", "changes", "field"),
    [
        ("resolve", "dispatched", {"note": None}, "note"),
        ("resolve", "dispatched", {"note": "  "}, "note"),
        ("resolve", "dispatched", {"has_photo": False}, "photo"),
        ("dispatch", "acknowledged", {"assignee": ""}, "assignee"),
        ("return", "new", {"reason": "because"}, "reason"),
        ("return", "new", {"reason": "other", "note": None}, "note"),
        ("transfer", "new", {"to_station": "yh-s1"}, "to_station"),
        ("transfer", "new", {"to_station": "nowhere"}, "to_station"),
        ("transfer", "new", {"to_station": None}, "to_station"),
        ("request_extension", "dispatched", {"hours": 0}, "hours"),
        ("request_extension", "dispatched", {"hours": 10_000}, "hours"),
        ("request_extension", "dispatched", {"hours": None}, "hours"),
        ("reject", "new", {"reason": "boring"}, "reason"),
        ("hold", "dispatched", {"note": None}, "note"),
        ("reopen", "resolved", {"note": ""}, "note"),
    ],
)
def test_bad_inputs_are_422_naming_the_field(action: str, status: str, changes: dict, field: str) -> None:
    """An allowed action with a missing or bad input is 422 and says which field."""
    who: Actor = sorted(EXPECTED[action][2])[0]
    base = full_request(action)
    req = Request(**{**base.__dict__, **changes})
    with pytest.raises(Refused) as refused:
        decide(facts_for(status, action), who, req, STATIONS)
    assert refused.value.status == 422 and refused.value.field == field


def test_photo_only_where_the_category_needs_one() -> None:
    """Resolving a category without the after-photo rule needs only the note."""
    f = Facts(status="dispatched", station_id="yh-s1", needs_after_photo=False)
    assert decide(f, "staff", Request("resolve", note="已清理"), STATIONS).status == "resolved"


def test_return_reasons_accept_the_four_codes() -> None:
    """属地不符, 权属不清, 职能交叉 without a note; 其他 with one."""
    f = Facts(status="new", station_id="yh-s1")
    for code in ("wrong_area", "unclear_ownership", "overlapping_duties"):
        assert decide(f, "staff", Request("return", reason=code), STATIONS).status == "returned"
    assert (
        decide(f, "staff", Request("return", reason="other", note="不归我站"), STATIONS).status == "returned"
    )


def test_unknown_action_is_422() -> None:
    """An action name the table does not know."""
    with pytest.raises(Refused) as refused:
        decide(Facts(status="new", station_id="yh-s1"), "staff", Request("fly"), STATIONS)
    assert refused.value.status == 422 and refused.value.allowed == ["acknowledge", "return", "transfer"]


def test_the_closer_states_are_the_contract() -> None:
    """The table's states are schemas.cases' CaseStatus, its open states OPEN_STATUSES, and no rule
    leaves a final state."""
    assert set(STATES) == set(CaseStatus)
    assert frozenset(OPEN) == OPEN_STATUSES
    assert set(transitions.ACTIVE) == ACTIVE and ACTIVE <= OPEN_STATUSES
    for rule in TABLE.values():
        assert not FINAL_STATUSES & set(rule.sources), rule.action
