"""After-photo storage: unguessable ids, where the files live, atomic writes.

Checking and re-encoding is `gridloop.photos.clean_photo` (the one sanitiser, one set of limits).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from gridloop.photos import clean_photo

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


def store(var_dir: Path, data: bytes) -> StoredPhoto:
    """Clean an upload and write it under a new unguessable id (atomically: temp file, then rename)."""
    photo = clean_photo(data)
    photo_id = secrets.token_urlsafe(PHOTO_ID_BYTES)
    folder = photo_dir(var_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{photo_id}.jpg"
    tmp = folder / f".{photo_id}.tmp"
    tmp.write_bytes(photo.data)
    tmp.replace(path)
    return StoredPhoto(photo_id, path, photo.width, photo.height, len(photo.data))
