"""A case's conversation, the pure part: what each kind of entry is called, who may write it, and
whether its words are acceptable.

Staff write internal notes (never shown to riders, never on Kafka), public updates and questions to
the riders; riders reply (words or a photo) and nudge (催办) through the reporter. Every entry is a
`case_message` row, a timeline row (so the live queue shows it) and an event; the writing is
`Lifecycle.converse`, `Lifecycle.rider_replied` and `Lifecycle.nudged` (services/closer/lifecycle.py).
"""

from __future__ import annotations

from typing import Literal

from schemas.cases import CaseStatus
from schemas.events import MAX_NOTE_TEXT, MAX_PUBLIC_TEXT

StaffKind = Literal["note", "public", "question"]
STAFF_KINDS: tuple[StaffKind, ...] = ("note", "public", "question")
EVENTS: dict[str, str] = {
    "note": "case.commented",
    "public": "case.updated_public",
    "question": "case.question_asked",
    "reply": "case.rider_replied",
    "nudge": "case.nudged",
}
"""The event each kind of entry sends on `cases.events`."""
ACTIONS: dict[str, str] = {
    "note": "comment",
    "public": "update_public",
    "question": "ask",
    "reply": "rider_reply",
    "nudge": "nudge",
}
"""The timeline action (and live-queue change) of each kind of entry."""
WRITERS = ("staff", "supervisor")
"""Roles that write on a case: its station's staff and the centre's supervisors (not admins)."""
FINAL = (CaseStatus.CLOSED, CaseStatus.REJECTED)


class Unacceptable(ValueError):
    """An entry that cannot be written: (status, code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def limit_of(kind: str) -> int:
    """The longest text an entry of this kind may have."""
    return MAX_NOTE_TEXT if kind == "note" else MAX_PUBLIC_TEXT


def check_entry(kind: str, text: str, status: str, role: str) -> str:
    """The entry's text, stripped, when a `role` may write a `kind` entry on a case in `status`;
    Unacceptable otherwise (403 for the role, 409 for a question on a final case, 422 for the text)."""
    if role not in WRITERS:
        raise Unacceptable(
            403, "forbidden", "Only station staff and the centre's supervisors write on a case."
        )
    if kind not in STAFF_KINDS:
        raise Unacceptable(422, "invalid_kind", f"kind must be one of {', '.join(STAFF_KINDS)}.")
    words = text.strip()
    if not words:
        raise Unacceptable(422, "text_required", "Write something first.")
    if len(words) > limit_of(kind):
        raise Unacceptable(422, "text_too_long", f"At most {limit_of(kind)} characters.")
    if kind == "question" and status in FINAL:
        raise Unacceptable(409, "case_final", f"The case is {status}: no rider can be asked any more.")
    return words
