"""Photos (riders' and after-photos): check the real image type with Pillow, re-encode as JPEG, drop
every metadata block. The one sanitiser and the one set of limits for every service.

Phones downscale before upload (the scan page does it in the browser), so a normal photo is a few
hundred kilobytes; the limits below are for clients that send the camera's original file.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from gridloop.errors import ApiError

MAX_PHOTOS = 3
MAX_PHOTO_BYTES = 10 * 1024 * 1024
"""Largest accepted upload per photo (before re-encoding)."""
MAX_REQUEST_BYTES = MAX_PHOTOS * MAX_PHOTO_BYTES + 256 * 1024
"""Largest accepted multipart request: three full photos and the form fields."""
MAX_SIDE = 1600
"""Stored photos are at most this many pixels on their longer side."""
MAX_PIXELS = 40_000_000
"""Refuse decompression bombs: a small file that would expand to a huge bitmap."""
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(raw))
            if image.format not in ACCEPTED_FORMATS:
                raise PhotoError(415, "not_an_image", f"{name} is a {image.format} file, not a photo")
            if image.width * image.height > MAX_PIXELS:
                raise PhotoError(413, "photo_too_large", f"{name} has too many pixels")
            image.load()
            # the camera's orientation tag is applied to the pixels, since the tag itself is dropped
            image = ImageOps.exif_transpose(image)
    except PhotoError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise PhotoError(415, "not_an_image", f"{name} is not an image (JPEG, PNG or WebP)") from exc
    except Image.DecompressionBombWarning as exc:
        raise PhotoError(413, "photo_too_large", f"{name} has too many pixels") from exc
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
