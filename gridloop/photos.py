"""Photos (riders' and after-photos): check the real image type with Pillow, re-encode as JPEG, drop
every metadata block. The one sanitiser and the one set of limits for every service.

Phones downscale before upload (the scan page does it in the browser), so a normal photo is a few
hundred kilobytes; the limits below are for clients that send the camera's original file.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from gridloop.errors import ApiError

MAX_PHOTOS = 3
MAX_PHOTO_BYTES = 10 * 1024 * 1024
"""Largest accepted upload per photo (before re-encoding)."""
FORM_OVERHEAD_BYTES = 256 * 1024
"""Room for a multipart form's fields and part headers next to its photos."""
MAX_REQUEST_BYTES = MAX_PHOTOS * MAX_PHOTO_BYTES + FORM_OVERHEAD_BYTES
"""Largest accepted multipart request: three full photos and the form fields."""
MAX_SIDE = 1600
"""Stored photos are at most this many pixels on their longer side."""
MAX_PIXELS = 24_000_000
"""Largest bitmap ever decoded: 24 MP is 72 MB as RGB (96 MB as RGBA), twice a 12 MP phone photo.

A small file can claim a huge bitmap (a 200 KB PNG of 7000x7000 decodes to 147-196 MB), so the
size in the header is checked before a pixel is decoded. JPEGs are decoded at 1/2, 1/4 or 1/8 scale
when that still covers MAX_SIDE (`Image.draft`), so a 48 MP camera original decodes to 12 MP and
passes; other formats must fit as they are."""
DECODE_SLOTS = 2
"""Photos decoded at once per process: with MAX_PIXELS, at most ~200 MB of bitmaps in flight."""
_decoding = threading.BoundedSemaphore(DECODE_SLOTS)
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "MPO"})
JPEG_QUALITY = 82


class PhotoError(ApiError):
    """A photo that cannot be accepted; ``status`` is the HTTP answer (413 or 415)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)


@dataclass(frozen=True)
class CleanPhoto:
    """A re-encoded photo ready to store, and the digest of what the client sent."""

    data: bytes
    width: int
    height: int
    upload_sha256: str


def photo_form_bytes(photos: int) -> int:
    """The body cap of a multipart form carrying up to `photos` photos."""
    return photos * MAX_PHOTO_BYTES + FORM_OVERHEAD_BYTES


def upload_digest(raw: bytes) -> str:
    """The digest of an upload as sent (part of a report's idempotency fingerprint)."""
    return hashlib.sha256(raw).hexdigest()


def clean_photo(raw: bytes, name: str = "photo") -> CleanPhoto:
    """Check, rotate upright, downscale and re-encode one upload; PhotoError when it is not a photo."""
    if len(raw) > MAX_PHOTO_BYTES:
        raise PhotoError(
            413,
            "photo_too_large",
            f"{name} is {len(raw) // 1024} KB; at most {MAX_PHOTO_BYTES // 1048576} MB",
        )
    if not raw:
        raise PhotoError(415, "not_an_image", f"{name} is empty")
    # decoding runs in worker threads; the bound keeps a burst of uploads from holding N bitmaps
    with _decoding:
        image = _decode(raw, name)
        if image.mode not in ("RGB", "L"):
            background = Image.new("RGB", image.size, "white")
            rgba = image.convert("RGBA")
            background.paste(rgba, mask=rgba.getchannel("A"))
            image = background
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        # a fresh image written without exif=/icc_profile= carries no EXIF, GPS or maker notes
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
    return CleanPhoto(out.getvalue(), image.width, image.height, upload_digest(raw))


def _draft_size(width: int, height: int) -> tuple[int, int]:
    """The size a stored photo will have: the longer side at MAX_SIDE (or smaller as it is)."""
    scale = min(1.0, MAX_SIDE / max(width, height, 1))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _decode(raw: bytes, name: str) -> Image.Image:
    """Open, check the type and the pixel count from the header, then decode and turn upright."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(raw))
            if image.format not in ACCEPTED_FORMATS:
                raise PhotoError(415, "not_an_image", f"{name} is a {image.format} file, not a photo")
            if image.format in ("JPEG", "MPO"):
                # the decoder itself scales down by 2, 4 or 8: the full bitmap never exists
                image.draft(None, _draft_size(image.width, image.height))
            if image.width * image.height > MAX_PIXELS:
                raise PhotoError(
                    413,
                    "photo_too_large",
                    f"{name} has too many pixels ({image.width}x{image.height}); "
                    f"at most {MAX_PIXELS // 1_000_000} megapixels",
                )
            image.load()
            # the camera's orientation tag is applied to the pixels, since the tag itself is dropped
            return ImageOps.exif_transpose(image)
    except PhotoError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise PhotoError(415, "not_an_image", f"{name} is not an image (JPEG, PNG or WebP)") from exc
    except Image.DecompressionBombWarning as exc:
        raise PhotoError(413, "photo_too_large", f"{name} has too many pixels") from exc
