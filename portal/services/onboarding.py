"""The new partner's checklist: payout details, their link copied, a creative grabbed, the terms read.

Each step ticks itself from what the partner did: a payout account saved, or the first
time they copied their link, copied or downloaded a creative, or opened the program terms.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from portal.models import Partner
from portal.models.types import utcnow
from portal.services import payouts


class Step(enum.StrEnum):
    PAYOUT_DETAILS = "payout_details"
    COPY_LINK = "copy_link"
    GRAB_CREATIVE = "grab_creative"
    READ_TERMS = "read_terms"


# The steps a partner's action records (payout details are the payout account itself).
_RECORDED = {
    Step.COPY_LINK: "link_copied_at",
    Step.GRAB_CREATIVE: "creative_grabbed_at",
    Step.READ_TERMS: "terms_read_at",
}
RECORDED_STEPS = tuple(str(step) for step in _RECORDED)

# A partner is new for this long after approval: the checklist is for them, not for partners
# who were selling long before it existed.
NEW_FOR = timedelta(days=60)


@dataclass(frozen=True)
class Checklist:
    done: dict[Step, bool]

    @property
    def complete(self) -> bool:
        return all(self.done.values())

    @property
    def done_count(self) -> int:
        return sum(self.done.values())


def checklist_of(partner: Partner) -> Checklist:
    done = {Step.PAYOUT_DETAILS: payouts.account_of(partner) is not None}
    done.update({step: getattr(partner, column) is not None for step, column in _RECORDED.items()})
    return Checklist({step: done[step] for step in Step})


def checklist_to_show(partner: Partner, now: datetime | None = None) -> Checklist | None:
    """The checklist while a new partner has steps left, else None."""
    since = partner.status_changed_at or partner.applied_at
    if since is not None and (now or utcnow()) - since > NEW_FOR:
        return None
    checklist = checklist_of(partner)
    return None if checklist.complete else checklist


def record_step(partner: Partner, step: str, now: datetime | None = None) -> bool:
    """Note the first time the partner did ``step``; True if this was the first time."""
    column = _RECORDED[Step(step)]
    if getattr(partner, column) is not None:
        return False
    setattr(partner, column, now or utcnow())
    return True
