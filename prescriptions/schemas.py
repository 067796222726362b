"""Request and response bodies for prescriptions and doctors' keys (shapes in shared/API.md)."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from o2o.db import INT4_MAX
from o2o.errors import rule_error
from o2o.i18n import gettext as _
from o2o.text import NOT_BLANK
from prescriptions import substances
from prescriptions.models import DoctorKeyStatus
from prescriptions.workflow import PrescriptionStatus, normalise_id_number

Text200 = Field(min_length=1, max_length=200, pattern=NOT_BLANK)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PrescriptionRequestIn(_In):
    order_id: uuid.UUID
    patient_name: str = Field(
        min_length=1, pattern=NOT_BLANK, max_length=200, description="Legal name."
    )
    # 6 to 32 letters and digits; spaces and dashes between them are dropped.
    id_number: str = Field(
        min_length=6,
        max_length=40,
        pattern=r"^[ -]*([A-Za-z0-9][ -]*){6,32}$",
        description="Identity document number; stored hashed.",
    )
    symptoms: str = Field(
        min_length=1, pattern=NOT_BLANK, max_length=4000, description="Symptoms or diagnosis."
    )
    allergies: str = Field(
        min_length=1, pattern=NOT_BLANK, max_length=2000, description='"none" if none.'
    )
    current_medication: str = Field(
        min_length=1, pattern=NOT_BLANK, max_length=2000, description='"none" if none.'
    )

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str) -> str:
        number = normalise_id_number(value)
        if not (6 <= len(number) <= 32) or not number.isascii() or not number.isalnum():
            raise ValueError("must be 6 to 32 letters and digits")
        return number


class PrescribedItemIn(_In):
    product_id: StrictInt = Field(gt=0, le=INT4_MAX)
    quantity: StrictInt = Field(gt=0, le=1000)
    dose: str = Text200
    frequency: str = Text200
    duration_days: StrictInt = Field(gt=0, le=365)
    substitution_allowed: StrictBool = Field(
        False,
        description="May the pharmacy give an equivalent (same generic, strength, form, route)? "
        "Signed with the rest; exported as MedicationRequest.substitution.allowedBoolean",
    )


class SigningPayloadIn(_In):
    items: list[PrescribedItemIn] = Field(min_length=1, max_length=20)
    refills: StrictInt = Field(0, ge=0, le=12)
    valid_hours: Annotated[StrictInt, Field(ge=1, le=72)] | None = Field(
        None, description="Default 24, at most 72."
    )

    @field_validator("items")
    @classmethod
    def _one_line_per_product(cls, items: list[PrescribedItemIn]) -> list[PrescribedItemIn]:
        ids = [item.product_id for item in items]
        if len(ids) != len(set(ids)):
            # uniqueItems cannot say "unique by product_id": a code of its own.
            raise rule_error("repeated_product", _("each product may appear once"))
        return items


class SigningPayloadOut(BaseModel):
    payload: str = Field(description="base64 of the canonical payload bytes to sign")
    key_id: int
    sign_by: datetime


class IssueIn(_In):
    payload: str = Field(min_length=1, pattern=NOT_BLANK, max_length=65536)
    signature: str = Field(min_length=1, pattern=NOT_BLANK, max_length=256)


class RefillIn(_In):
    order_id: uuid.UUID = Field(description="Your order waiting for a prescription.")


class DeclineIn(_In):
    reason: str = Field(min_length=1, pattern=NOT_BLANK, max_length=2000)


class ReviewIn(_In):
    decision: Literal["approve", "reject"]
    reason: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _reject_needs_reason(self) -> "ReviewIn":
        if self.decision == "reject" and not self.reason:
            raise ValueError("a rejection needs a reason")
        return self


class ApproveIn(ReviewIn):
    decision: Literal["approve"]


class RejectIn(ReviewIn):
    decision: Literal["reject"]
    reason: str = Field(min_length=1, max_length=2000, pattern=NOT_BLANK, description="Required.")


# The request body of a review: one shape per decision, so the schema says a rejection needs a
# reason (API.md's `{"decision", "reason"}` is unchanged).
ReviewBody = Annotated[ApproveIn | RejectIn, Field(discriminator="decision")]


class DoctorKeyIn(_In):
    public_key: str = Field(
        min_length=1,
        pattern=NOT_BLANK,
        max_length=200,
        description="base64 of the raw 32-byte Ed25519 public key",
    )


class KeyProofIn(_In):
    signature: str = Field(
        min_length=1,
        pattern=NOT_BLANK,
        max_length=256,
        description="base64 of your key's Ed25519 signature of the challenge payload's bytes",
    )


class KeyChallengeOut(BaseModel):
    key_id: int
    payload: str = Field(description="base64 of the bytes to sign with the key's private key")
    expires_at: datetime


class DoctorKeyOut(BaseModel):
    id: int
    doctor_id: int
    status: DoctorKeyStatus
    public_key: str
    created_at: datetime
    approved_at: datetime | None
    superseded_at: datetime | None
    revoked_at: datetime | None
    proved_at: datetime | None = Field(
        description="When the doctor signed the server's challenge (approval needs it)"
    )


class DoctorKeyRegisteredOut(DoctorKeyOut):
    challenge: KeyChallengeOut


class DoctorKeyPage(BaseModel):
    items: list[DoctorKeyOut]
    next_cursor: str | None


class PatientOut(BaseModel):
    id: int
    legal_name: str
    id_number_masked: str


class PersonOut(BaseModel):
    id: int
    name: str


class AttachmentOut(BaseModel):
    content_type: str
    size_bytes: int
    url: str


class PrescribedItemOut(BaseModel):
    product_id: int
    product_name: str
    quantity: int
    dose: str
    frequency: str
    duration_days: int
    substitution_allowed: bool = False


class WarningOut(BaseModel):
    code: str
    message: str
    product_id: int
    order_id: uuid.UUID
    dispensed_at: datetime


class PrescriptionOut(BaseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    status: PrescriptionStatus
    patient: PatientOut
    symptoms: str
    allergies: str
    current_medication: str
    attachment: AttachmentOut | None
    requested_at: datetime
    escalated: bool
    doctor: PersonOut | None
    claimed_at: datetime | None
    items: list[PrescribedItemOut] | None
    refills: int
    issued_at: datetime | None
    expires_at: datetime | None
    doctor_key_id: int | None
    signature: str | None
    decline_reason: str | None
    review_overdue: bool
    reviewed_at: datetime | None
    review_reason: str | None
    fills_used: int
    # A refill: the earlier prescription (of the same patient) this order is filled from.
    refill_of: uuid.UUID | None
    dispensed_at: datetime | None
    # Shown to pharmacists (and admins): the same medicine dispensed to the patient recently.
    warnings: list[WarningOut]
    # Shown to pharmacists (and admins); null for others.
    safety: "SafetyOut | None" = None


class ReallocationOut(BaseModel):
    product_id: int
    from_lots: list[int]
    to_lots: list[int]


class ReviewOut(PrescriptionOut):
    order_status: str
    reallocated: list[ReallocationOut]


class QueueItemOut(BaseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    status: PrescriptionStatus
    requested_at: datetime
    waited_minutes: int
    overdue: bool
    # Doctor's view: what the patient reports (no identity until claimed).
    claimed_by_me: bool | None = None
    symptoms: str | None = None
    allergies: str | None = None
    current_medication: str | None = None
    has_attachment: bool | None = None
    # Pharmacist's view.
    store_id: int | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None


class QueuePage(BaseModel):
    items: list[QueueItemOut]
    next_cursor: str | None


class AuditEntryOut(BaseModel):
    id: int
    action: str
    actor_id: int | None
    actor_role: str
    at: datetime
    from_status: PrescriptionStatus | None
    to_status: PrescriptionStatus
    reason: str | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


# --- allergies and safety warnings ----------------------------------------------------------


class AllergyIn(_In):
    code: str = Field(
        min_length=1,
        max_length=100,
        pattern=NOT_BLANK,
        description="Substance code: the generic name as the catalogue writes it "
        "(see GET /substances); case and spacing are normalised.",
    )
    display: str | None = Field(
        None, min_length=1, max_length=200, pattern=NOT_BLANK, description="Name shown."
    )
    reaction: str | None = Field(None, min_length=1, max_length=500, pattern=NOT_BLANK)

    @field_validator("code")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return substances.normalize(value)


class AllergiesIn(_In):
    allergies: list[AllergyIn] = Field(max_length=50, description="Replaces the whole list.")

    @model_validator(mode="after")
    def _once_each(self) -> "AllergiesIn":
        codes = [a.code for a in self.allergies]
        if len(codes) != len(set(codes)):
            raise rule_error("duplicate_allergy", _("a substance is listed twice"))
        return self


class AllergyOut(BaseModel):
    code: str
    system: str
    display: str
    reaction: str | None


class AllergiesOut(BaseModel):
    allergies: list[AllergyOut]


class InteractsWithOut(BaseModel):
    product_id: int
    order_id: uuid.UUID
    # "this_order", "open_order" (another open order of the patient) or "dispensed" (lately)
    source: str
    dispensed_at: datetime | None


class SafetyWarningOut(BaseModel):
    code: Literal["allergy", "interaction"]
    severity: Literal["contraindicated", "major", "moderate", "minor"]
    message: str
    product_id: int
    substances: list[str]
    advice: str
    interacts_with: InteractsWithOut | None = None


class SafetyOut(BaseModel):
    """For the pharmacist: the patient's coded allergies, and the allergy and interaction
    warnings for the order against what the patient takes."""

    allergies: list[AllergyOut]
    warnings: list[SafetyWarningOut]


class SubstanceOut(BaseModel):
    code: str
    system: str
    display: str


class SubstancePage(BaseModel):
    items: list[SubstanceOut]


# PrescriptionOut names SafetyOut before it is defined (kept next to the other safety shapes).
PrescriptionOut.model_rebuild()
ReviewOut.model_rebuild()
