"""The prescription state machine and the rules a decision is checked against, as plain functions.

Pure: no database, no clock (callers pass `now`). `service.py` loads and locks the rows, asks these
functions, and writes the result.
"""

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from o2o.errors import Conflict
from o2o.i18n import gettext as _


class PrescriptionStatus(enum.StrEnum):
    REQUESTED = "requested"  # the patient asked; no doctor has taken it yet
    CLAIMED = "claimed"  # one doctor took it
    ISSUED = "issued"  # signed by the doctor, awaiting the store's pharmacist
    DECLINED = "declined"  # the doctor refused to prescribe (the order is cancelled)
    APPROVED = "approved"  # the pharmacist verified it (the order is released)
    REJECTED = "rejected"  # the pharmacist refused it (the order is cancelled)
    DISPENSED = "dispensed"  # handed over: the prescription is used
    EXPIRED = "expired"  # validity passed before approval
    # The order was cancelled while the request was open, or after approval but before the
    # hand-over (the fill is given back).
    CANCELLED = "cancelled"


S = PrescriptionStatus

# to-state -> from-states.
TRANSITIONS: dict[PrescriptionStatus, frozenset[PrescriptionStatus]] = {
    S.CLAIMED: frozenset({S.REQUESTED}),
    # A claim not acted on in time goes back to the queue (sweeps.return_stale_claims).
    S.REQUESTED: frozenset({S.CLAIMED}),
    S.ISSUED: frozenset({S.CLAIMED}),
    S.DECLINED: frozenset({S.CLAIMED}),
    S.APPROVED: frozenset({S.ISSUED}),
    S.REJECTED: frozenset({S.ISSUED}),
    S.DISPENSED: frozenset({S.APPROVED}),
    S.EXPIRED: frozenset({S.ISSUED}),
    S.CANCELLED: frozenset({S.REQUESTED, S.CLAIMED, S.ISSUED, S.APPROVED}),
}

# A request still waiting for someone: at most one of these per order.
OPEN_STATES = frozenset({S.REQUESTED, S.CLAIMED, S.ISSUED})
# The prescription was approved for its order: using it again is a reuse.
USED_STATES = frozenset({S.APPROVED, S.DISPENSED})


class IllegalPrescriptionTransition(Conflict):
    code = "illegal_transition"


def allowed(current: PrescriptionStatus, to: PrescriptionStatus) -> bool:
    """Say whether a prescription may go from current to `to`."""
    return current in TRANSITIONS.get(to, frozenset())


def check(current: PrescriptionStatus, to: PrescriptionStatus) -> None:
    """Raise IllegalPrescriptionTransition (409) unless the transition is legal."""
    if not allowed(current, to):
        raise IllegalPrescriptionTransition(
            _("A prescription that is {status} cannot become {new_status}.").format(
                status=current.value, new_status=to.value
            ),
            details={"status": current.value, "requested": to.value},
        )


# --- identity numbers --------------------------------------------------------------------------


def normalise_id_number(raw: str) -> str:
    """Drop spaces and dashes and upper-case letters, so one document always hashes the same."""
    return "".join(ch for ch in raw if ch not in " -").upper()


def mask_id_number(number: str) -> str:
    """Star all but the first and last few characters: `1101**********1234`; shorter numbers
    show less, so never more than half of any number is visible."""
    keep = 4 if len(number) >= 16 else 2 if len(number) >= 10 else 1
    return number[:keep] + "*" * (len(number) - 2 * keep) + number[-keep:]


# --- waiting and overdue -----------------------------------------------------------------------


def waited_minutes(since: datetime, now: datetime) -> int:
    """Whole minutes between since and now (never negative)."""
    return max(0, int((now - since).total_seconds() // 60))


def is_overdue(since: datetime, now: datetime, limit_minutes: int) -> bool:
    """Say whether something waiting since `since` has waited `limit_minutes` or more."""
    return now - since >= timedelta(minutes=limit_minutes)


# --- checks at review --------------------------------------------------------------------------


@dataclass(frozen=True)
class PrescribedItem:
    product_id: int
    quantity: int
    duration_days: int


@dataclass(frozen=True)
class OrderedItem:
    product_id: int
    quantity: int
    rx_only: bool


def items_outside_prescription(
    ordered: Iterable[OrderedItem], prescribed: Iterable[PrescribedItem]
) -> list[dict]:
    """List each prescription-only order line that the prescription does not cover in full."""
    allowed_qty: dict[int, int] = {}
    for item in prescribed:
        allowed_qty[item.product_id] = allowed_qty.get(item.product_id, 0) + item.quantity
    problems = []
    for line in ordered:
        if not line.rx_only:
            continue
        limit = allowed_qty.get(line.product_id, 0)
        if line.quantity > limit:
            problems.append(
                {
                    "product_id": line.product_id,
                    "ordered": line.quantity,
                    "prescribed": limit,
                    "reason": "not prescribed" if limit == 0 else "more than prescribed",
                }
            )
    return problems


def course_end(issued_at: datetime, duration_days: int) -> date:
    """The last day of the course of medication that starts on the day of issue."""
    return (issued_at + timedelta(days=duration_days)).date()


def lot_lasts_course(lot_expiry: date, issued_at: datetime, duration_days: int) -> bool:
    """Say whether a lot stays in date until the course ends (it may expire on a later day)."""
    return lot_expiry >= course_end(issued_at, duration_days)


def durations_by_product(items: Iterable[PrescribedItem]) -> Mapping[int, int]:
    """The longest course prescribed for each product."""
    out: dict[int, int] = {}
    for item in items:
        out[item.product_id] = max(out.get(item.product_id, 0), item.duration_days)
    return out


# --- attachments -------------------------------------------------------------------------------

# Magic numbers at the start of the file; the name and the declared type are never trusted.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"%PDF-", "application/pdf"),
)
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "application/pdf": "pdf"}


def sniff_attachment_type(head: bytes) -> str | None:
    """Return the content type the first bytes prove (JPEG, PNG or PDF), or None."""
    for magic, content_type in _SIGNATURES:
        if head.startswith(magic):
            return content_type
    return None


_EXTENSION_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "pdf": "application/pdf",
}
# Declared types that say nothing about the content.
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}


def claimed_attachment_types(filename: str | None, declared_type: str | None) -> set[str]:
    """The content types the client's file name and declared type claim (the unknown says
    nothing; anything specific that is not JPEG, PNG or PDF is kept as claimed)."""
    claimed = set()
    if filename and "." in filename:
        ext = filename.rsplit(".", 1)[1].strip().lower()
        claimed.add(_EXTENSION_TYPES.get(ext, f"file/.{ext}"))
    declared = (declared_type or "").split(";")[0].strip().lower()
    if declared == "image/jpg":
        declared = "image/jpeg"
    if declared not in _GENERIC_TYPES:
        claimed.add(declared)
    return claimed
