"""Uploaded images: the type comes from the bytes; bad files are refused with a clear reason."""

from __future__ import annotations

import io
import re
import tempfile

import pytest

from config import TestingConfig
from portal import create_app
from portal.errors import InvalidFile
from portal.services.creative_files import Upload, format_size, inspect_image
from tests.images import FIFTY_MB, SVG_WITH_SCRIPT, WINDOWS_PROGRAM, image_bytes, png, png_bomb, truncated

MAX = 5 * 1024 * 1024


def upload(data: bytes, name: str = "banner.png") -> Upload:
    return Upload.from_stream(name, io.BytesIO(data), MAX)


@pytest.fixture(scope="module")
def _checking_app(tmp_path_factory):
    # The checks need no database, only the app for their messages: one app serves the module.
    return create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI="sqlite://",
        STORAGE_LOCAL_DIR=str(tmp_path_factory.mktemp("m")),
    )


@pytest.fixture(autouse=True)
def _request(_checking_app):
    with _checking_app.test_request_context():
        yield


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [
        ("PNG", "image/png", "png"),
        ("JPEG", "image/jpeg", "jpg"),
        ("GIF", "image/gif", "gif"),
        ("WEBP", "image/webp", "webp"),
    ],
)
def test_each_accepted_format_is_recognised_from_its_bytes(fmt, content_type, extension):
    data = image_bytes(fmt, (728, 90))
    # The name lies on purpose: only the content counts.
    info = inspect_image(upload(data, "banner.txt"), MAX)
    assert (info.format, info.content_type, info.extension) == (fmt, content_type, extension)
    assert (info.width, info.height) == (728, 90)
    assert info.size == len(data)
    assert len(info.sha256) == 64


def test_animated_gif_is_accepted():
    from PIL import Image

    frames = [Image.new("RGB", (120, 60), color) for color in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    info = inspect_image(upload(buffer.getvalue(), "anim.gif"), MAX)
    assert (info.format, info.width, info.height) == ("GIF", 120, 60)


def test_a_renamed_program_is_refused_for_what_it_is():
    with pytest.raises(InvalidFile) as refused:
        inspect_image(upload(WINDOWS_PROGRAM, "summer-sale.png"), MAX)
    assert refused.value.message == (
        "“summer-sale.png” is not an image: its content is a Windows program. "
        "Upload a PNG, JPEG, GIF or WebP image."
    )


@pytest.mark.parametrize("name", ["logo.svg", "logo.png"])
def test_svg_is_refused_whatever_its_name(name):
    with pytest.raises(InvalidFile, match="SVG files can carry scripts"):
        inspect_image(upload(SVG_WITH_SCRIPT, name), MAX)


def test_svg_without_xml_prolog_is_refused_too():
    with pytest.raises(InvalidFile, match="SVG"):
        inspect_image(upload(b"  <svg onload='alert(1)'></svg>", "x.webp"), MAX)


def test_a_fifty_megabyte_file_is_refused_without_being_read():
    with tempfile.SpooledTemporaryFile(max_size=1024) as spooled:
        spooled.write(png())
        spooled.seek(FIFTY_MB - 1)
        spooled.write(b"\0")
        spooled.seek(0)
        big = Upload.from_stream("huge.png", spooled, MAX)
    assert big.size == FIFTY_MB
    assert big.data == b""  # measured, never read into memory
    with pytest.raises(InvalidFile) as refused:
        inspect_image(big, MAX)
    assert refused.value.message == "“huge.png” is 50 MB; an image may be at most 5 MB."


def test_an_image_just_within_the_limit_is_measured_and_read():
    data = png()
    exact = Upload.from_stream("ok.png", io.BytesIO(data), len(data))
    assert exact.data == data
    assert inspect_image(exact, len(data)).size == len(data)
    with pytest.raises(InvalidFile, match="may be at most"):
        inspect_image(Upload.from_stream("ok.png", io.BytesIO(data), len(data) - 1), len(data) - 1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_a_truncated_image_is_refused(fmt):
    with pytest.raises(InvalidFile, match="damaged or incomplete"):
        inspect_image(upload(truncated(fmt), f"cut.{fmt.lower()}"), MAX)


def test_a_decompression_bomb_is_refused():
    bomb = png_bomb()
    assert len(bomb) < 100_000  # tiny on disk, 81 megapixels unpacked
    with pytest.raises(InvalidFile, match="unpacks to far more pixels than a banner has"):
        inspect_image(upload(bomb, "bomb.png"), MAX)


def test_a_bomb_past_pillows_own_limit_is_refused_the_same_way():
    with pytest.raises(InvalidFile, match="unpacks to far more pixels"):
        inspect_image(upload(png_bomb(20_000, 20_000), "bomb.png"), MAX)


def test_a_very_long_banner_is_refused():
    with pytest.raises(InvalidFile, match="10000 pixels a side"):
        inspect_image(upload(png_bomb(12_000, 8), "strip.png"), MAX)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"PK\x03\x04" + b"\0" * 100, "a ZIP archive or office document"),
        (b"%PDF-1.7\n" + b"\0" * 100, "a PDF document"),
        (b"\x7fELF\x02\x01\x01" + b"\0" * 100, "a Linux program"),
        (b"#!/bin/sh\nrm -rf /\n", "a script"),
        (b"<!DOCTYPE html><html><script>alert(1)</script>", "a web page (HTML)"),
        (b"just some text", "is not a PNG, JPEG, GIF or WebP image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "damaged or incomplete"),
    ],
)
def test_other_files_are_refused_with_a_reason(data, message):
    with pytest.raises(InvalidFile, match=re.escape(message)):
        inspect_image(upload(data, "thing.png"), MAX)


def test_sizes_are_shown_for_people():
    assert format_size(5 * 1024 * 1024) == "5 MB"
    assert format_size(1536) == "1.5 KB"
    assert format_size(12) == "12 bytes"
