"""QR codes of the signed-in partner's links and coupon codes, as SVG or PNG downloads.

The links page shows the SVG inline (an ``<img>`` ignores ``Content-Disposition``), so one
address serves both the preview and the download.
"""

from __future__ import annotations

import re

from flask import Response, abort, request
from flask_login import current_user

from portal.blueprints.partner import bp
from portal.models import CouponStatus
from portal.security import partner_required
from portal.services import coupons, qrcodes, reports

_KINDS = "<any(svg, png):kind>"
_MIMETYPES = {"svg": "image/svg+xml", "png": "image/png"}
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def qr_download(text: str, kind: str, name: str) -> Response:
    """``text`` as a QR code file ``<name>-qr.<kind>`` (the console's downloads use it too)."""
    filename = f"{_UNSAFE_IN_NAME.sub('-', name)}-qr.{kind}"
    response = Response(
        qrcodes.qr_bytes(text, kind),
        mimetype=_MIMETYPES[kind],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
    # Asked again on every page view (a link's code can change), answered 304 when unchanged.
    response.cache_control.private = True
    response.cache_control.no_cache = True
    response.add_etag()
    return response.make_conditional(request)


@bp.get(f"/links/main/qr.{_KINDS}")
@partner_required
def download_main_link_qr(kind: str):
    code = current_user.partner.ref_code
    return qr_download(qrcodes.link_qr_text(code), kind, f"link-{code}")


@bp.get(f"/links/<int:link_id>/qr.{_KINDS}")
@partner_required
def download_link_qr(link_id: int, kind: str):
    link = reports.partner_link(current_user.partner, link_id)
    if link is None:
        abort(404)
    return qr_download(qrcodes.link_qr_text(link.code), kind, f"link-{link.code}")


@bp.get(f"/coupons/<int:coupon_id>/qr.{_KINDS}")
@partner_required
def download_coupon_qr(coupon_id: int, kind: str):
    partner = current_user.partner
    coupon = coupons.partner_coupon(partner, coupon_id)
    # A code waiting for approval, or switched off, attributes nothing: nothing to print.
    if coupon is None or coupon.status != CouponStatus.ACTIVE:
        abort(404)
    return qr_download(qrcodes.coupon_qr_text(partner.ref_code, coupon.code), kind, f"coupon-{coupon.code}")
