"""Every model, imported so Alembic and the app see the whole schema."""

from portal.models.accounts import CHANNELS, OPERATOR_ROLES, Partner, PartnerStatus, Role, User
from portal.models.audit import AuditEvent
from portal.models.program import CommissionType, PayoutSchedule, Program

__all__ = [
    "CHANNELS",
    "OPERATOR_ROLES",
    "AuditEvent",
    "CommissionType",
    "Partner",
    "PartnerStatus",
    "PayoutSchedule",
    "Program",
    "Role",
    "User",
]
