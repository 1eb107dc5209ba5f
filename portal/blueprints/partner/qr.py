"""QR codes of the signed-in partner's links and coupon codes, as SVG or PNG downloads.

The links page shows the SVG inline (an ``<img>`` ignores ``Content-Disposition``), so one
address serves both the preview and the download.
"""

from __future__ import annotations

from flask import abort
from flask_login import current_user

from portal.blueprints.partner import bp
from portal.models import CouponStatus
from portal.security import partner_required
from portal.services import coupons, qrcodes, reports
from portal.views import qr_download

_KINDS = "<any(svg, png):kind>"


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
