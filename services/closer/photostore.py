"""After-photos: check the real image type with Pillow, re-encode as JPEG without metadata, store, serve."""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from gridloop.errors import ApiError

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP"})
# a decompression bomb (a tiny file that decodes to gigapixels) is refused before it is decoded
MAX_PIXELS = 40_000_000
PHOTO_ID_BYTES = 16  # 128 random bits: the URL is the capability, so it must not be guessable


@dataclass(frozen=True)
class StoredPhoto:
    """A photo written to disk: its id, where it is, its size."""

    photo_id: str
    path: Path
    width: int
    height: int
    size: int


def photo_dir(var_dir: Path) -> Path:
    """Where the closer keeps after-photos."""
    return var_dir / "closer-photos"


def photo_path(var_dir: Path, photo_id: str) -> Path | None:
    """The file of a photo id, or None for an id that cannot be one of ours."""
    if not (20 <= len(photo_id) <= 40) or not all(c.isalnum() or c in "-_" for c in photo_id):
        return None
    return photo_dir(var_dir) / f"{photo_id}.jpg"


def reencode(data: bytes, max_side: int) -> tuple[bytes, int, int]:
    """Validate an upload as a real image and return it as a fresh JPEG (no EXIF, GPS or comments)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            if fmt not in ACCEPTED_FORMATS:
                raise ApiError(415, "unsupported_image", f"Send a JPEG, PNG or WebP photo, not {fmt}.")
            if probe.width * probe.height > MAX_PIXELS:
                raise ApiError(413, "image_too_large", "The photo has too many pixels.")
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)  # the first frame of an animation
            upright = ImageOps.exif_transpose(img)  # keep the orientation the EXIF tag asked for
            rgb = upright.convert("RGB")
    except ApiError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(415, "not_an_image", "The file is not a readable image.") from exc
    rgb.thumbnail((max_side, max_side))
    out = io.BytesIO()
    # a new image from pixels only: no exif=, icc_profile= or comment is passed on
    rgb.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue(), rgb.width, rgb.height


def store(var_dir: Path, data: bytes, max_side: int) -> StoredPhoto:
    """Re-encode and write a photo under a new unguessable id (atomically: temp file, then rename)."""
    jpeg, width, height = reencode(data, max_side)
    photo_id = secrets.token_urlsafe(PHOTO_ID_BYTES)
    folder = photo_dir(var_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{photo_id}.jpg"
    tmp = folder / f".{photo_id}.tmp"
    tmp.write_bytes(jpeg)
    tmp.replace(path)
    return StoredPhoto(photo_id, path, width, height, len(jpeg))
