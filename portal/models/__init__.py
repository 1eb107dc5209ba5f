"""Every model, imported so Alembic and the app see the whole schema."""

from portal.models.accounts import CHANNELS, OPERATOR_ROLES, Partner, PartnerStatus, Role, User
from portal.models.audit import AuditEvent
from portal.models.payouts import (
    BatchKind,
    BatchStatus,
    ItemStatus,
    PayoutAccount,
    PayoutBatch,
    PayoutItem,
    PayoutMethod,
)
from portal.models.program import CommissionType, PayoutSchedule, Program
from portal.models.rewards import CORRECTION_KINDS, Commission, CommissionKind, CommissionStatus
from portal.models.stats import (
    COUNTERS,
    CreativeDailyStat,
    DailyStat,
    PartnerDailyStat,
    PartnerTrend,
    ProgramDailyStat,
)
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
    "CORRECTION_KINDS",
    "COUNTERS",
    "OPERATOR_ROLES",
    "ApiKey",
    "AttributionMethod",
    "AuditEvent",
    "BatchKind",
    "BatchStatus",
    "Click",
    "Commission",
    "CommissionKind",
    "CommissionStatus",
    "CommissionType",
    "Conversion",
    "ConversionStatus",
    "CreativeDailyStat",
    "DailyStat",
    "ItemStatus",
    "Link",
    "Partner",
    "PartnerDailyStat",
    "PartnerStatus",
    "PartnerTrend",
    "PayoutAccount",
    "PayoutBatch",
    "PayoutItem",
    "PayoutMethod",
    "PayoutSchedule",
    "Program",
    "ProgramDailyStat",
    "RejectionReason",
    "Role",
    "Signup",
    "User",
]
