"""Pure parts of the reporter: photo cleaning, rate-limit arithmetic, Open311 shaping, wording."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree as ET

import pytest
from PIL import Image

from gridloop.photos import MAX_PHOTO_BYTES, PhotoError, clean_photo
from services.reporter import open311
from services.reporter.config import RateLimits
from services.reporter.ratelimit import client_ref_for, retry_after
from services.reporter.wording import STATUS, action_text, ago, local_time, status_text
from tests.support.reporter import make_jpeg


def test_clean_photo_strips_exif_gps_and_downscales() -> None:
    """A camera JPEG with GPS comes out as a smaller JPEG with no EXIF at all."""
    raw = make_jpeg(4000, 3000, gps=True)
    assert Image.open(io.BytesIO(raw)).getexif().get_ifd(0x8825)  # the input does carry GPS
    photo = clean_photo(raw)
    out = Image.open(io.BytesIO(photo.data))
    assert out.format == "JPEG" and max(out.size) == 1600 and out.size == (photo.width, photo.height)
    assert not out.getexif() and "exif" not in out.info and b"Exif" not in photo.data[:200]
    assert b"PhoneMaker" not in photo.data


def test_clean_photo_applies_orientation_before_dropping_it() -> None:
    """A portrait photo stored sideways with an orientation tag comes out upright."""
    image = Image.new("RGB", (400, 200), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    photo = clean_photo(buf.getvalue())
    assert (photo.width, photo.height) == (200, 400)


def test_clean_photo_accepts_png_with_alpha_and_webp() -> None:
    """Other real image types are re-encoded as JPEG."""
    for fmt, mode in (("PNG", "RGBA"), ("WEBP", "RGB"), ("PNG", "P")):
        buf = io.BytesIO()
        Image.new(mode, (50, 40)).save(buf, fmt)
        photo = clean_photo(buf.getvalue())
        assert Image.open(io.BytesIO(photo.data)).format == "JPEG"


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"hello, I am a text file named photo.jpg\n", 415, "not_an_image"),
        (b"", 415, "not_an_image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 100, 415, "not_an_image"),  # a JPEG header and nothing else
        (b"\xff\xd8\xff" + b"\0" * (12 * 1024 * 1024), 413, "photo_too_large"),
    ],
)
def test_clean_photo_refuses_what_is_not_a_photo(raw: bytes, status: int, code: str) -> None:
    """Text renamed .jpg, an empty or truncated file: 415; a 12 MB upload: 413."""
    with pytest.raises(PhotoError) as caught:
        clean_photo(raw)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_clean_photo_refuses_a_decompression_bomb() -> None:
    """A small file that would decode to a huge bitmap is refused, not decoded."""
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, "PNG")
    assert len(buf.getvalue()) < MAX_PHOTO_BYTES
    with pytest.raises(PhotoError) as caught:
        clean_photo(buf.getvalue())
    assert caught.value.status == 413


def test_retry_after_counts_from_the_oldest_entry_that_must_leave() -> None:
    """Sliding window: the wait is until the allowed-th newest report leaves the window."""
    now = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    window = timedelta(minutes=10)
    newest_first = [now - timedelta(minutes=m) for m in (1, 3, 6)]
    assert retry_after(newest_first, 4, window, now) is None
    assert retry_after(newest_first, 3, window, now) == 4 * 60
    assert retry_after(newest_first, 2, window, now) == 7 * 60
    assert retry_after(newest_first, 0, window, now) is None  # 0 switches a limit off
    assert retry_after([now - window + timedelta(milliseconds=10)], 1, window, now) == 1


def test_client_ref_hides_the_address() -> None:
    """The stored address reference is a keyed hash, stable per address."""
    ref = client_ref_for("203.0.113.9", "secret")
    assert ref and "203" not in ref and ref == client_ref_for("203.0.113.9", "secret")
    assert ref != client_ref_for("203.0.113.9", "other") and client_ref_for(None, "s") is None
    # a local proxy without X-Forwarded-For must not throttle every rider together
    assert client_ref_for("127.0.0.1", "s") is None and client_ref_for("::1", "s") is None


def test_rate_limits_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRIDLOOP_RATE_* configure the limits of every replica alike."""
    monkeypatch.setenv("GRIDLOOP_RATE_PER_CODE", "7")
    assert RateLimits().per_code == 7 and RateLimits().window_seconds == 600


def test_open311_xml_shape_and_escaping() -> None:
    """Lists become repeated elements named as the spec does; text is escaped; None is empty."""
    body = open311.to_xml(
        "service_requests",
        [{"service_request_id": "r_1", "description": "<b>&</b>", "zipcode": None, "lat": 31.5}],
    )
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<service_requests><request>')
    root = ET.fromstring(body)
    assert root.find("request/description").text == "<b>&</b>"  # type: ignore[union-attr]
    assert b"&lt;b&gt;&amp;&lt;/b&gt;" in body and root.find("request/zipcode").text is None  # type: ignore[union-attr]
    errors = ET.fromstring(open311.to_xml("errors", [{"code": 404, "description": "x"}]))
    assert errors.find("error/code").text == "404"  # type: ignore[union-attr]


def test_open311_dates() -> None:
    """W3C date-times out (with the zone), in (400 when malformed; naive means UTC)."""
    when = datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC)
    assert open311.w3c(when) == "2026-11-24T01:02:03Z"
    assert open311.parse_w3c("2026-11-24T09:02:03+08:00", "start_date") == when
    assert open311.parse_w3c("2026-11-24", "start_date") == datetime(2026, 11, 24, tzinfo=UTC)
    with pytest.raises(open311.Open311Error):
        open311.parse_w3c("last tuesday", "start_date")


def test_wording_covers_every_state_in_both_languages() -> None:
    """Every case state has plain words in Chinese and English; times are Shanghai time."""
    for status in ("received", "new", "acknowledged", "dispatched", "resolved", "closed", "returned"):
        assert status in STATUS and status_text(status, "zh") != status_text(status, "en")
    assert status_text("closed", "zh") == "已结案" and action_text("acknowledged", "zh") == "网格站已签收"
    # the closer's own steps read as words on the rider's page too, not as their action names
    assert action_text("on_duty", "zh") == "非工作时间，已转值班人员处置"
    assert action_text("replan", "en") == "Holiday schedule published: deadlines re-planned"
    now = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    assert local_time(now, "zh") == "11月24日 09:00"
    assert ago(now - timedelta(hours=2, minutes=5), now, "zh") == "2 小时前"
    assert ago(now - timedelta(minutes=5), now, "en") == "5 min ago"
