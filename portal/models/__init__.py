"""Every model, imported so Alembic and the app see the whole schema."""

from portal.models.accounts import CHANNELS, OPERATOR_ROLES, Partner, PartnerStatus, Role, User
from portal.models.audit import AuditEvent
from portal.models.messaging import (
    EMAIL_KINDS,
    Announcement,
    AnnouncementRecipient,
    AutomaticKind,
    AutomaticMessageLog,
    EmailPreference,
    Message,
    MessageTemplate,
    OutboundEmail,
    Sender,
    Tag,
    Thread,
    partner_tags,
)
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
    "EMAIL_KINDS",
    "OPERATOR_ROLES",
    "Announcement",
    "AnnouncementRecipient",
    "ApiKey",
    "AttributionMethod",
    "AuditEvent",
    "AutomaticKind",
    "AutomaticMessageLog",
    "Click",
    "Commission",
    "CommissionKind",
    "CommissionStatus",
    "CommissionType",
    "Conversion",
    "ConversionStatus",
    "EmailPreference",
    "Link",
    "Message",
    "MessageTemplate",
    "OutboundEmail",
    "Partner",
    "PartnerStatus",
    "PayoutSchedule",
    "Program",
    "RejectionReason",
    "Role",
    "Sender",
    "Signup",
    "Tag",
    "Thread",
    "User",
    "partner_tags",
]
