"""The staff's thank-you to a case's riders (致谢): the preset messages and the length of added words.

Shared by the closer (which checks and sends it) and the reporter (which shows it to the riders):
the event carries the preset's key and the staff's own words, each side renders the preset in the
reader's language.
"""

from __future__ import annotations

MAX_THANKS_TEXT = 200
"""The longest words staff may add to a preset (plain text)."""

PRESETS: dict[str, tuple[str, str]] = {
    "reported": (
        "感谢您及时上报，问题已经处理。",
        "Thank you for reporting it in time: it has been dealt with.",
    ),
    "safety": (
        "感谢您守护街道安全，您是我们的流动网格员！",
        "Thank you for keeping the street safe: you are one of our roving grid members!",
    ),
    "details": (
        "感谢您提供的详细信息和照片，帮助我们快速处置。",
        "Thank you for the details and photos: they helped us act fast.",
    ),
}
"""Preset key -> (Chinese, English) words."""


def preset_text(preset: str, lang: str) -> str:
    """A preset's words in a language (zh unless en); the key itself for an unknown preset."""
    pair = PRESETS.get(preset)
    if pair is None:
        return preset
    return pair[1] if lang == "en" else pair[0]
