"""Every model, imported so Alembic and the app see the whole schema."""

from portal.models.accounts import CHANNELS, OPERATOR_ROLES, Partner, PartnerStatus, Role, User
from portal.models.audit import AuditEvent
from portal.models.creatives import Creative, CreativeKind, CreativeStatus, CreativeVersion
from portal.models.program import CommissionType, PayoutSchedule, Program
from portal.models.rewards import Commission, CommissionKind, CommissionStatus
from portal.models.tracking import (
    ApiKey,
    AttributionMethod,
    Click,
    Conversion,
    ConversionStatus,
    Link,
    RejectionReason,
    Signup,
)

__all__ = [
    "CHANNELS",
    "OPERATOR_ROLES",
    "ApiKey",
    "AttributionMethod",
    "AuditEvent",
    "Click",
    "Commission",
    "CommissionKind",
    "CommissionStatus",
    "CommissionType",
    "Conversion",
    "ConversionStatus",
    "Creative",
    "CreativeKind",
    "CreativeStatus",
    "CreativeVersion",
    "Link",
    "Partner",
    "PartnerStatus",
    "PayoutSchedule",
    "Program",
    "RejectionReason",
    "Role",
    "Signup",
    "User",
]
