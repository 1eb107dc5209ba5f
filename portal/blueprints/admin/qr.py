"""QR codes of a partner's links for operators (the partner's page in the console), as partners get them."""

from __future__ import annotations

from portal.blueprints.admin import bp
from portal.extensions import db
from portal.models import Link, Partner
from portal.security import operator_required
from portal.services import qrcodes
from portal.views import qr_download

_KINDS = "<any(svg, png):kind>"


@bp.get(f"/partners/<int:partner_id>/qr.{_KINDS}")
@operator_required
def download_partner_qr(partner_id: int, kind: str):
    """The partner's main link (their ref code)."""
    code = db.get_or_404(Partner, partner_id).ref_code
    return qr_download(qrcodes.link_qr_text(code), kind, f"link-{code}")


@bp.get(f"/links/<int:link_id>/qr.{_KINDS}")
@operator_required
def download_link_qr(link_id: int, kind: str):
    link = db.get_or_404(Link, link_id)
    return qr_download(qrcodes.link_qr_text(link.code), kind, f"link-{link.code}")
