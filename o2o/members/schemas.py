"""What the membership answer shows."""

from datetime import datetime

from pydantic import BaseModel


class NextLevelOut(BaseModel):
    level: str
    from_spend_minor: int
    spend_needed_minor: int


class BenefitOut(BaseModel):
    code: str
    description: str


class PointMovementOut(BaseModel):
    kind: str  # accrual, reversal, expiry
    points: int
    spend_minor: int
    order_id: str | None
    at: datetime
    expires_at: datetime | None
    note: str | None


class MembershipOut(BaseModel):
    points: int
    level: str
    next_level: NextLevelOut | None
    spend_12m_minor: int
    benefits: list[BenefitOut]
    # The latest point movements, newest first (the ledger itself is never rewritten).
    history: list[PointMovementOut]


class DeliveryWaiverOut(BaseModel):
    """A delivery fee the member's level waived: the amount, the level, the reason."""

    amount_minor: int
    currency: str
    level: str
    reason: str
