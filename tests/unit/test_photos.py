"""Photos can't exhaust memory (issue 12): the pixel count is checked from the header before any
decoding, JPEGs are decoded scaled down, and at most DECODE_SLOTS photos decode at once."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image, ImageFile

from gridloop import photos
from gridloop.photos import DECODE_SLOTS, MAX_PIXELS, MAX_SIDE, PhotoError, clean_photo


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int) -> bytes:
    """A grey PNG of any size, written row by row: a few hundred KB, never a bitmap in memory."""
    compressor = zlib.compressobj(9)
    row = b"\0" + b"\x80" * width  # filter byte, then the row
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of the image at every ImageFile.load call (a decoded image may be loaded again: a no-op)."""
    seen: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        seen.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return seen


def test_a_7000_square_png_bomb_is_refused_without_decoding(loads: list[tuple[int, int]]) -> None:
    """Issue 12: a 7000x7000 PNG of a few hundred KB (147 MB as a bitmap) is 413, no pixel decoded."""
    bomb = blank_png(7000, 7000)
    assert len(bomb) < 300_000
    with pytest.raises(PhotoError) as refused:
        clean_photo(bomb, "photo 1")
    assert (refused.value.status, refused.value.code) == (413, "photo_too_large")
    assert refused.value.message == "photo 1 has too many pixels (7000x7000); at most 24 megapixels"
    assert loads == []


def test_the_pixel_cap_is_24_megapixels(loads: list[tuple[int, int]]) -> None:
    """30 MP (90 MB as RGB) is refused before decoding; a PNG just under the cap is decoded once."""
    assert MAX_PIXELS == 24_000_000
    with pytest.raises(PhotoError) as refused:
        clean_photo(blank_png(6000, 5000))
    assert refused.value.status == 413 and loads == []
    ok = clean_photo(blank_png(4000, 3000))
    assert (ok.width, ok.height) == (MAX_SIDE, 1200)
    assert set(loads) == {(4000, 3000)}


def test_a_large_jpeg_is_decoded_scaled_down(loads: list[tuple[int, int]]) -> None:
    """A 6000x4500 camera JPEG (27 MP, over the cap as it is) decodes at half size and is kept."""
    buf = io.BytesIO()
    Image.new("L", (6000, 4500), 128).save(buf, "JPEG", quality=80)
    photo = clean_photo(buf.getvalue())
    assert (photo.width, photo.height) == (MAX_SIDE, 1200)
    assert set(loads) == {(3000, 2250)}  # 6.75 MP decoded instead of 27


def test_at_most_two_photos_decode_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight uploads cleaned in eight threads: never more than DECODE_SLOTS (2) decoding together."""
    assert DECODE_SLOTS == 2
    real = photos._decode
    lock = threading.Lock()
    now = peak = 0

    def decode(raw: bytes, name: str) -> Image.Image:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        try:
            time.sleep(0.05)
            return real(raw, name)
        finally:
            with lock:
                now -= 1

    monkeypatch.setattr(photos, "_decode", decode)
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (10, 200, 30)).save(buf, "JPEG")
    with ThreadPoolExecutor(max_workers=8) as pool:
        cleaned = list(pool.map(lambda i: clean_photo(buf.getvalue(), f"photo {i}"), range(8)))
    assert len(cleaned) == 8 and all(p.width == 320 for p in cleaned)
    assert peak == DECODE_SLOTS
