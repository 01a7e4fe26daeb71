"""Staff's thank-you to a case's riders (致谢), the pure part: who may send it, on which case, and
whether its words are acceptable.

One thank-you per case, ever: it is a recognition of the riders' report, not a chat (the
conversation is for that), so a second one is 409 `already_thanked`. It goes to every rider of the
case as `case.riders_thanked` on `cases.events`; the reporter shows it on each rider's own tracking
page and counts it on their /my page. The writing is `Lifecycle.thank`; the route is
`actions.thank`.
"""

from __future__ import annotations

from schemas.cases import CaseStatus
from schemas.thanks import MAX_THANKS_TEXT, PRESETS
from services.closer.conversation import WRITERS, Unacceptable


def check_thanks(preset: str, text: str, status: str, role: str, already: bool) -> str:
    """The added words, stripped, when a `role` may thank the riders of a case in `status` (not yet
    thanked); Unacceptable otherwise (403 for the role, 422 for the preset or words, 409 for a
    rejected or already thanked case)."""
    if role not in WRITERS:
        raise Unacceptable(403, "forbidden", "Only station staff and the centre's supervisors thank riders.")
    if preset not in PRESETS:
        raise Unacceptable(422, "invalid_preset", f"preset must be one of {', '.join(PRESETS)}.")
    words = text.strip()
    if len(words) > MAX_THANKS_TEXT:
        raise Unacceptable(422, "text_too_long", f"At most {MAX_THANKS_TEXT} characters.")
    if status == CaseStatus.REJECTED:
        raise Unacceptable(409, "case_rejected", "The case was rejected: there is nothing to thank for.")
    if already:
        raise Unacceptable(409, "already_thanked", "The riders of this case were already thanked.")
    return words
