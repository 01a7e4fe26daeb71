"""After-photos in the closer's database: unguessable ids, stored in the transaction of the case change.

The bytes live in `case_photo_data` (docs/architecture.md, "Photos"): every replica serves every
photo, a failed transition leaves no orphan, and the database backup covers them. Checking and
re-encoding is `gridloop.photos.clean_photo` (the one sanitiser, one set of limits).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, select

from gridloop.photos import CleanPhoto, clean_photo
from services.closer.models import CasePhoto, CasePhotoData

PHOTO_ID_BYTES = 16  # 128 random bits: the URL is the capability, so it must not be guessable


@dataclass(frozen=True)
class NewPhoto:
    """A cleaned upload under its new id, not stored yet."""

    photo_id: str
    photo: CleanPhoto


def valid_id(photo_id: str) -> bool:
    """Whether a string can be one of our photo ids (checked before any lookup)."""
    return 20 <= len(photo_id) <= 40 and all(c.isalnum() or c in "-_" for c in photo_id)


def prepare(data: bytes) -> NewPhoto:
    """Clean an upload (PhotoError when it is not a photo) and give it a new unguessable id."""
    return NewPhoto(secrets.token_urlsafe(PHOTO_ID_BYTES), clean_photo(data))


def add(session: Session, new: NewPhoto, case_id: str, uploaded_by: str, now: datetime) -> None:
    """Store a photo in the caller's transaction: it exists exactly when the case change does."""
    session.add(
        CasePhoto(
            photo_id=new.photo_id,
            case_id=case_id,
            width=new.photo.width,
            height=new.photo.height,
            size=len(new.photo.data),
            uploaded_by=uploaded_by,
            created_at=now,
        )
    )
    session.flush()  # the bytes' row refers to the photo's
    session.add(CasePhotoData(photo_id=new.photo_id, data=new.photo.data))


def load(session: Session, photo_id: str) -> bytes | None:
    """A photo's JPEG bytes, or None."""
    row = session.get(CasePhotoData, photo_id)
    return None if row is None else row.data


@dataclass(frozen=True)
class Imported:
    """What `import_files` did with the files of an old photo folder."""

    imported: int
    present: int
    unknown: list[str]


def import_files(session: Session, folder: Path) -> Imported:
    """Copy after-photos kept as files before issue 13 (`<id>.jpg`) into the database.

    Only files of a known photo (a `case_photo` row) are taken; one already stored is left alone, so
    running it again, or on each replica's folder, is safe. Files are not deleted."""
    known = set(session.exec(select(CasePhoto.photo_id)))
    stored = set(session.exec(select(CasePhotoData.photo_id)))
    imported, present, unknown = 0, 0, []
    for path in sorted(folder.glob("*.jpg")):
        photo_id = path.stem
        if photo_id not in known or not valid_id(photo_id):
            unknown.append(path.name)
        elif photo_id in stored:
            present += 1
        else:
            session.add(CasePhotoData(photo_id=photo_id, data=path.read_bytes()))
            stored.add(photo_id)
            imported += 1
    return Imported(imported, present, unknown)
