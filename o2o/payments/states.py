"""The payment state machine and the refund rules as plain functions over plain values.

Pure: no database. `intake.py` applies a decision to locked rows. Events from a payment app may
arrive twice or out of order; each function says what an event means in the payment's current
state: apply it, ignore it (already known or stale), refuse it (wrong amount: 422), or ask for it
again later (a refund reported before the capture it refunds: 409, the app retries).
"""

import enum
from dataclasses import dataclass

from o2o.errors import Conflict, InvalidInput
from o2o.i18n import gettext as _
from o2o.payments.models import PaymentStatus, RefundStatus

P = PaymentStatus
R = RefundStatus

EVENT_TYPES = ("captured", "failed", "refunded", "refund_failed")


class AmountMismatch(InvalidInput):
    code = "amount_mismatch"


class NotCapturedYet(Conflict):
    code = "payment_not_captured"


class RefundTooLarge(Conflict):
    code = "refund_exceeds_captured"


class Action(enum.StrEnum):
    NONE = "none"
    # The unpaid order goes on (released, or waits for its prescription).
    MOVE_ORDER_ON = "move_order_on"
    # The order was closed before the money came: give it all back at once.
    REFUND_ALL = "refund_all"


@dataclass(frozen=True)
class CaptureDecision:
    status: PaymentStatus
    action: Action
    ignored: str | None = None


def on_capture(
    status: PaymentStatus,
    *,
    amount_minor: int,
    currency: str,
    expected_minor: int,
    expected_currency: str,
    order_open: bool,
) -> CaptureDecision:
    """Decide what a `captured` event does to a payment in `status` (422 for a wrong amount)."""
    if amount_minor != expected_minor or currency.upper() != expected_currency.upper():
        raise AmountMismatch(
            _("The captured amount or currency is not what the order is to pay."),
            details={
                "expected_minor": expected_minor,
                "expected_currency": expected_currency,
                "amount_minor": amount_minor,
                "currency": currency,
            },
        )
    if status is P.CAPTURED:
        return CaptureDecision(P.CAPTURED, Action.NONE, ignored="already captured")
    if status is P.CANCELLED or not order_open:
        # Expired or cancelled first: the order stays cancelled and the money goes back.
        return CaptureDecision(P.CAPTURED, Action.REFUND_ALL)
    # Pending, or failed earlier and then paid after all (the patient tried again).
    return CaptureDecision(P.CAPTURED, Action.MOVE_ORDER_ON)


def on_failure(status: PaymentStatus) -> tuple[PaymentStatus, str | None]:
    """Decide what a `failed` event does: only a pending payment fails; later it is stale."""
    if status is P.PENDING:
        return P.FAILED, None
    return status, f"payment already {status.value}"


def on_refund_report(
    payment_status: PaymentStatus, refund_status: RefundStatus, *, succeeded: bool
) -> tuple[RefundStatus, str | None]:
    """Decide what `refunded` / `refund_failed` does to a refund (409 before the capture)."""
    if payment_status is not P.CAPTURED:
        raise NotCapturedYet(
            _("This payment has no capture yet; send the refund event again after the capture."),
        )
    if refund_status is R.SUCCEEDED:
        return R.SUCCEEDED, "refund already succeeded"
    if succeeded:
        # A success after a reported failure is still money returned.
        return R.SUCCEEDED, None
    if refund_status is R.FAILED:
        return R.FAILED, "refund already failed"
    return R.FAILED, None


# Refund rules ----------------------------------------------------------------------------------


def committed_refunds(refunds: list[tuple[RefundStatus, int]]) -> int:
    """Return the refunded or still-requested amount (failed refunds give nothing back)."""
    return sum(amount for status, amount in refunds if status is not R.FAILED)


def refundable(captured_minor: int, refunds: list[tuple[RefundStatus, int]]) -> int:
    """Return how much may still be refunded: never more than was captured."""
    return max(0, captured_minor - committed_refunds(refunds))


def refund_for_cancel(captured_minor: int, refunds: list[tuple[RefundStatus, int]]) -> int:
    """Return the refund of a cancelled order: everything captured not already given back."""
    return refundable(captured_minor, refunds)


def refund_for_late_delivery(
    compensation_minor: int, captured_minor: int, refunds: list[tuple[RefundStatus, int]]
) -> int:
    """Return the refund of an SLA breach: the compensation, within what is still refundable."""
    return min(max(0, compensation_minor), refundable(captured_minor, refunds))


def check_refund(amount_minor: int, captured_minor: int, refunds: list[tuple[RefundStatus, int]]):
    """Refuse (409) a refund above what is still refundable."""
    left = refundable(captured_minor, refunds)
    if amount_minor <= 0 or amount_minor > left:
        raise RefundTooLarge(
            _("A refund may not exceed what was captured and not yet refunded."),
            details={"requested_minor": amount_minor, "refundable_minor": left},
        )
