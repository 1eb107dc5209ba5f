"""Checking uploaded images: the type comes from the bytes, never from the name.

A banner or screenshot is accepted only when its first bytes say PNG, JPEG,
GIF or WebP, Pillow agrees, its size and pixel count are within limits, and it
decodes completely (no truncated files, no decompression bombs). SVG is refused
outright: it is a document that can carry scripts, not an image.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import IO

from flask_babel import gettext as _

from portal.errors import InvalidFile

# A banner is at most a few thousand pixels a side; anything near this is a bomb, not a banner.
MAX_SIDE = 10_000
MAX_PIXELS = 40_000_000
MAX_FRAMES = 1_000

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
_FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
}


@dataclass(frozen=True)
class Upload:
    """An uploaded file as the services need it: its name, its size, and its bytes if small enough."""

    filename: str
    size: int
    data: bytes

    @classmethod
    def from_stream(cls, filename: str | None, stream: IO[bytes], max_bytes: int) -> Upload:
        """Measure the stream and read it only when it is within ``max_bytes``."""
        try:
            stream.seek(0, io.SEEK_END)
            size = stream.tell()
            stream.seek(0)
        except (OSError, AttributeError):
            data = stream.read(max_bytes + 1)
            return cls(filename or "", len(data), data if len(data) <= max_bytes else b"")
        data = stream.read() if size <= max_bytes else b""
        return cls(filename or "", size, data)

    @property
    def display_name(self) -> str:
        return (self.filename or _("the file")).replace("\\", "/").rsplit("/", 1)[-1][:120]


@dataclass(frozen=True)
class ImageInfo:
    format: str  # PNG, JPEG, GIF, WEBP
    content_type: str
    extension: str
    width: int
    height: int
    size: int
    sha256: str


def format_size(size: int) -> str:
    """Bytes for people: 5242880 → "5 MB", 1536 → "1.5 KB"."""
    from flask_babel import format_decimal

    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            return f"{format_decimal(round(size / scale, 1))} {unit}"
    return _("%(n)d bytes", n=size)


def _what_is_it(data: bytes) -> str | None:
    """A plain-words name for common non-image content, for the refusal message."""
    head = data[:512].lstrip()
    lowered = head.lower()
    if data.startswith(b"MZ"):
        return _("a Windows program")
    if data.startswith(b"\x7fELF"):
        return _("a Linux program")
    if data[:4] in (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):
        return _("a macOS program")
    if head.startswith(b"#!"):
        return _("a script")
    if data.startswith(b"PK\x03\x04"):
        return _("a ZIP archive or office document")
    if data.startswith(b"%PDF"):
        return _("a PDF document")
    if lowered.startswith((b"<!doctype html", b"<html")):
        return _("a web page (HTML)")
    return None


def _looks_like_svg(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<svg", b"<?xml", b"<!doctype svg")) or b"<svg" in head


def _sniff(data: bytes) -> str | None:
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def inspect_image(upload: Upload, max_bytes: int) -> ImageInfo:
    """Check an uploaded banner or screenshot; raise InvalidFile with a clear reason, or describe it."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    name = upload.display_name
    if upload.size > max_bytes:
        raise InvalidFile(
            _(
                "“%(name)s” is %(size)s; an image may be at most %(max)s.",
                name=name,
                size=format_size(upload.size),
                max=format_size(max_bytes),
            )
        )
    data = upload.data
    if not data:
        raise InvalidFile(_("“%(name)s” is empty.", name=name))
    if _looks_like_svg(data):
        raise InvalidFile(
            _(
                "“%(name)s” is an SVG drawing. SVG files can carry scripts, so they are not accepted: "
                "export it as PNG, JPEG, GIF or WebP.",
                name=name,
            )
        )
    sniffed = _sniff(data)
    if sniffed is None:
        what = _what_is_it(data)
        if what:
            raise InvalidFile(
                _(
                    "“%(name)s” is not an image: its content is %(what)s. "
                    "Upload a PNG, JPEG, GIF or WebP image.",
                    name=name,
                    what=what,
                )
            )
        raise InvalidFile(
            _("“%(name)s” is not a PNG, JPEG, GIF or WebP image (whatever its name says).", name=name)
        )

    damaged = InvalidFile(
        _(
            "“%(name)s” is damaged or incomplete (was the upload cut short?). Export it again and retry.",
            name=name,
        )
    )
    with warnings.catch_warnings():
        # Pillow only warns about large images by default; here they are refused.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[sniffed]) as image:
                width, height = image.size
                _check_dimensions(name, width, height)
                frames = getattr(image, "n_frames", 1)
                if frames > MAX_FRAMES:
                    raise InvalidFile(
                        _(
                            "“%(name)s” has %(n)d frames; at most %(max)d.",
                            name=name,
                            n=frames,
                            max=MAX_FRAMES,
                        )
                    )
                # Decode every pixel: truncated and corrupt files fail here, not in a partner's page.
                for frame in ImageSequence.Iterator(image):
                    frame.load()
                found = image.format
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(name) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise damaged from exc
    if found != sniffed or found not in _FORMATS:
        raise damaged
    content_type, extension = _FORMATS[found]
    return ImageInfo(
        format=found,
        content_type=content_type,
        extension=extension,
        width=width,
        height=height,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _bomb(name: str) -> InvalidFile:
    return InvalidFile(
        _(
            "“%(name)s” unpacks to far more pixels than a banner has (%(max)s megapixels at most, "
            "%(side)d pixels a side); it was refused.",
            name=name,
            max=MAX_PIXELS // 1_000_000,
            side=MAX_SIDE,
        )
    )


def _check_dimensions(name: str, width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise InvalidFile(_("“%(name)s” has no pixels.", name=name))
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise _bomb(name)
