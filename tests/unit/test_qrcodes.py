"""portal.services.qrcodes: what a QR code says, and that the files say exactly that."""

from __future__ import annotations

import io
import re

import segno
import zxingcpp
from PIL import Image

from portal.services import qrcodes


def _matrix_of_svg(svg: bytes, size: int) -> list[list[int]]:
    """The dark modules segno drew in an SVG (scale 1: one module per unit, rows of ``h`` runs)."""
    path = re.search(rb'class="qrline" stroke="#000" d="([^"]+)"', svg).group(1).decode()
    grid = [[0] * size for _ in range(size)]
    x = y = 0.0
    for op, number in re.findall(r"([Mmh])(-?[\d.]+(?: -?[\d.]+)?)", path):
        values = [float(v) for v in number.split()]
        if op == "M":
            x, y = values
        elif op == "m":
            x, y = x + values[0], y + values[1]
        else:
            for column in range(int(x), int(x + values[0])):
                grid[int(y)][column] = 1
            x += values[0]
    return grid


def test_a_links_code_is_its_tracking_address_with_sub_id_qr(app):
    app.config["PORTAL_BASE_URL"] = "https://partners.example/portal"
    with app.app_context():
        text = qrcodes.link_qr_text("summer-sale")
    assert text == "https://partners.example/portal/go/summer-sale?sub=qr"


def test_a_coupons_code_is_the_partners_main_link_with_sub_id_qr_and_the_code(app):
    with app.app_context():
        text = qrcodes.coupon_qr_text("pat", "SPRING10")
    assert text == "http://portal.test/go/pat?sub=qr&coupon=SPRING10"


def test_the_png_says_the_text_and_is_big_enough_to_print():
    text = "http://portal.test/go/abc2def?sub=qr"
    png = qrcodes.qr_png(text)
    image = Image.open(io.BytesIO(png))
    assert image.width == image.height >= qrcodes.PNG_MIN_PIXELS
    assert [found.text for found in zxingcpp.read_barcodes(image)] == [text]
    expected = segno.make(text, error="m", micro=False)
    assert image.width == expected.symbol_size(scale=qrcodes.png_scale(expected), border=4)[0]
    # Pixel for pixel, the symbol segno makes for exactly this text, with a 4-module quiet zone.
    scale = qrcodes.png_scale(expected)
    pixels = image.convert("L").load()
    for row_index, row in enumerate(expected.matrix):
        for column_index, dark in enumerate(row):
            x, y = (column_index + 4) * scale, (row_index + 4) * scale
            assert (pixels[x, y] == 0) == bool(dark), (row_index, column_index)
    assert all(pixels[x, 0] == 255 for x in range(image.width))


def test_the_svg_is_the_same_symbol():
    text = "http://portal.test/go/pat?sub=qr&coupon=SPRING10"
    svg = qrcodes.qr_svg(text)
    expected = segno.make(text, error="m", micro=False)
    size = expected.symbol_size(scale=1, border=4)[0]
    assert f'width="{size}mm" height="{size}mm" viewBox="0 0 {size} {size}"'.encode() in svg
    drawn = _matrix_of_svg(svg, size)
    inner = [row[4:-4] for row in drawn[4:-4]]
    assert inner == [[int(bool(m)) for m in row] for row in expected.matrix]
    assert all(not any(row) for row in drawn[:4] + drawn[-4:])


def test_the_same_text_gives_the_same_bytes():
    text = "http://portal.test/go/abc2def?sub=qr"
    assert qrcodes.qr_png(text) == qrcodes.qr_png(text)
    assert qrcodes.qr_svg(text) == qrcodes.qr_svg(text)
    assert qrcodes.qr_bytes(text, "svg") == qrcodes.qr_svg(text)
    assert qrcodes.qr_bytes(text, "png") == qrcodes.qr_png(text)
