"""QR codes for partners' links and coupon codes, as SVG or PNG files to download and print.

A scan is an ordinary click on the partner's ``/go/`` address with the sub-ID ``qr``
(``?sub=qr``, the parameter the redirect reads), so QR traffic shows apart in every
breakdown by sub-ID; the link's own channel and campaign stay on the click. A coupon's
code is the partner's main link with the sub-ID ``qr`` and ``coupon=<CODE>``: the scan is
tracked (and the click id already credits the code's partner), and the code travels in
the printed address, which cannot be changed once on paper. The redirect does not pass
``coupon`` on to the shop today; it ignores it.

The same text always gives the same bytes (no dates or random ids in the files).
"""

from __future__ import annotations

import io
import math

import segno

from portal.services.clicks import with_params
from portal.urls import absolute_url

# The query parameter the redirect reads the sub-ID from (portal/blueprints/track/routes.py).
SUB_PARAM = "sub"
QR_SUB_ID = "qr"
COUPON_PARAM = "coupon"
# M (15 % of the symbol may be lost) suits print; segno raises it when that costs no size.
ERROR_LEVEL = "m"
# The quiet zone the standard asks for: four modules of light on every side.
BORDER = 4
# Big enough to print sharp at a few centimetres (about 5 cm at 300 dpi).
PNG_MIN_PIXELS = 600
# In the SVG a module is 1 mm: about 4 cm for a link, a size that scans from arm's length.
SVG_MODULE_MM = 1
DARK = "#000"
LIGHT = "#fff"  # not transparent: a code on a dark background must still scan


def make_qr(text: str) -> segno.QRCode:
    """The QR code (never a Micro QR: not every phone reads those) for ``text``."""
    return segno.make(text, error=ERROR_LEVEL, micro=False)


def png_scale(qr: segno.QRCode) -> int:
    """Pixels per module so that the image, quiet zone included, is at least PNG_MIN_PIXELS wide."""
    modules = qr.symbol_size(scale=1, border=BORDER)[0]
    return math.ceil(PNG_MIN_PIXELS / modules)


def qr_svg(text: str) -> bytes:
    """``text`` as a standalone SVG file."""
    qr = make_qr(text)
    out = io.BytesIO()
    qr.save(
        out, kind="svg", scale=SVG_MODULE_MM, unit="mm", border=BORDER, dark=DARK, light=LIGHT, xmldecl=True
    )
    return out.getvalue()


def qr_png(text: str) -> bytes:
    """``text`` as a black-and-white PNG at least PNG_MIN_PIXELS square."""
    qr = make_qr(text)
    out = io.BytesIO()
    qr.save(out, kind="png", scale=png_scale(qr), border=BORDER, dark=DARK, light=LIGHT)
    return out.getvalue()


def qr_bytes(text: str, kind: str) -> bytes:
    """``text`` as ``kind`` ("svg" or "png")."""
    if kind == "svg":
        return qr_svg(text)
    if kind == "png":
        return qr_png(text)
    raise ValueError(f"no QR code format {kind!r}")


def link_qr_text(code: str) -> str:
    """What a link's QR code says: its tracking address on PORTAL_BASE_URL with the sub-ID ``qr``."""
    return with_params(absolute_url("track.follow_link", code=code), {SUB_PARAM: QR_SUB_ID})


def coupon_qr_text(ref_code: str, coupon_code: str) -> str:
    """What a coupon's QR code says: the partner's main link with the sub-ID ``qr`` and the code."""
    return with_params(
        absolute_url("track.follow_link", code=ref_code), {SUB_PARAM: QR_SUB_ID, COUPON_PARAM: coupon_code}
    )
