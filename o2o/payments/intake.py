"""Events from payment apps: verify the signature, apply each event once (by its event id), and
let the payment's state machine (`states.py`) say what an event means now.

The order is locked before its payment, as everywhere: a capture racing the payment deadline's
expiry waits for it (or it for the capture), so exactly one of them moves the order, and a capture
that comes second to a cancellation is refunded at once.
"""

import hashlib
import json
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import BigInteger, bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Session

from o2o import clock
from o2o.errors import InvalidInput, NotFound
from o2o.i18n import gettext as _
from o2o.orders import lifecycle
from o2o.orders.models import OrderStatus
from o2o.payments import apps, events, service, states
from o2o.payments.models import (
    Payment,
    PaymentCharge,
    PaymentEvent,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from o2o.payments.schemas import PaymentEventIn

P = PaymentStatus


class EventIdReused(InvalidInput):
    code = "event_id_reused"


@dataclass(frozen=True)
class Received:
    payment: Payment
    applied: bool
    outcome: str


def parse(raw: bytes) -> PaymentEventIn:
    """Read an event body (422 if it is not one)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(_("The body is not JSON."), code="malformed_body") from None
    try:
        return PaymentEventIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(
            _("The body is not a payment event."),
            details=[
                {"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)
            ],
        ) from None


# An event recorded once per app and event id, as SQL text: every online payment's events come
# through here, and SQLAlchemy compiles its PostgreSQL INSERT ... ON CONFLICT anew on every call
# (it never caches it).
_RECORD = (
    text(
        """
        INSERT INTO payment_events (app_id, event_id, type, payment_id, body_sha256, body, outcome)
        VALUES (:app_id, :event_id, :type, :payment_id, :body_sha256, :body, 'received')
        ON CONFLICT ON CONSTRAINT uq_payment_events_app_event DO NOTHING
        RETURNING id
        """
    )
    .bindparams(bindparam("payment_id", type_=UUID(as_uuid=True)), bindparam("body", type_=JSONB))
    .columns(id=BigInteger)
)


def receive(session: Session, headers: apps.SignedHeaders, raw: bytes) -> Received:
    """Apply one signed event from a payment app (401 unsigned, 422 wrong, 200 replayed)."""
    app = apps.authenticate(session, headers, raw)
    event = parse(raw)
    digest = hashlib.sha256(raw).hexdigest()
    payment = session.get(Payment, event.payment_id)
    if payment is None or payment.app_id != app.id:
        raise NotFound(_("No such payment for this app."), code="payment_not_found")
    order = lifecycle.lock_order(session, payment.order_id)
    # A split order's parts are all paid by this payment: lock them too, before it.
    parts = service.split_parts(session, order, lock=True)
    payment = service.payment_of(session, order.id, lock=True)
    # Recorded first: a twin delivery of the same event waits here for this one, then replays.
    inserted = session.execute(
        _RECORD,
        {
            "app_id": app.id,
            "event_id": event.event_id,
            "type": event.type,
            "payment_id": payment.id,
            "body_sha256": digest,
            "body": json.loads(raw),
        },
    ).scalar_one_or_none()
    if inserted is None:
        seen = session.scalar(
            select(PaymentEvent).where(
                PaymentEvent.app_id == app.id, PaymentEvent.event_id == event.event_id
            )
        )
        if seen.body_sha256 != digest:
            raise EventIdReused(
                _("This event id was used for another event."), details={"event_id": event.event_id}
            )
        return Received(payment, applied=False, outcome=f"replay: {seen.outcome}")
    outcome = _apply(session, parts, payment, event)
    session.get(PaymentEvent, inserted).outcome = outcome[:200]
    session.flush()
    return Received(payment, applied=outcome == "applied", outcome=outcome)


def _apply(session: Session, parts: list, payment: Payment, event: PaymentEventIn) -> str:
    if payment.method is not PaymentMethod.ONLINE:
        raise InvalidInput(_("This payment is taken at the store."), code="not_an_online_payment")
    now = clock.now()
    if event.type == "captured":
        decision = states.on_capture(
            payment.status,
            amount_minor=event.amount_minor,
            currency=event.currency,
            expected_minor=payment.amount_minor,
            expected_currency=payment.currency,
            order_open=any(part.status is OrderStatus.AWAITING_PAYMENT for part in parts),
        )
        if decision.ignored:
            return f"ignored: {decision.ignored}"
        payment.status = P.CAPTURED
        payment.captured_minor = event.amount_minor
        payment.captured_at = now
        payment.psp_reference = event.psp_reference
        session.flush()
        if decision.action is states.Action.MOVE_ORDER_ON:
            for part in parts:
                if part.status is OrderStatus.AWAITING_PAYMENT:
                    lifecycle.mark_paid(session, part, at=now)
            service.refund_cancelled_parts(session, payment, parts)
        elif decision.action is states.Action.REFUND_ALL:
            service.refund_everything(
                session,
                payment,
                reason=service.REASON_AFTER_CANCEL,
                note="The payment arrived after the order was cancelled.",
            )
        return "applied"
    if event.type == "failed":
        status, ignored = states.on_failure(payment.status)
        if ignored:
            return f"ignored: {ignored}"
        payment.status = status
        session.flush()
        return "applied"
    if event.type in ("charge_captured", "charge_failed"):
        return _apply_charge(session, payment, event, now)
    # refunded / refund_failed
    refund = _refund_named(session, payment, event)
    if (
        refund is not None
        and event.type == "refunded"
        and payment.status is P.CAPTURED
        and (event.amount_minor != refund.amount_minor or event.currency != refund.currency)
    ):
        raise states.AmountMismatch(
            _("The refunded amount or currency is not what was requested."),
            details={
                "expected_minor": refund.amount_minor,
                "expected_currency": refund.currency,
                "amount_minor": event.amount_minor,
                "currency": event.currency,
            },
        )
    status, ignored = states.on_refund_report(
        payment.status,
        refund.status if refund is not None else RefundStatus.REQUESTED,
        succeeded=event.type == "refunded",
    )
    if refund is None:
        raise InvalidInput(
            _("No refund of this payment matches the event; give its refund_id."),
            code="unknown_refund",
        )
    if ignored:
        return f"ignored: {ignored}"
    refund.status = status
    refund.settled_at = now
    refund.psp_reference = event.psp_reference
    session.flush()
    session.expire(payment, ["refunds"])
    if status is RefundStatus.SUCCEEDED:
        events.refund_settled.send(
            session,
            order_id=refund.order_id,
            refund_id=refund.id,
            paid_minor=service.paid_for(session, payment, refund.order_id),
        )
    return "applied"


def _apply_charge(session: Session, payment: Payment, event: PaymentEventIn, now) -> str:
    """Settle a further charge: a capture adds its amount to what the payment covers."""
    charge = (
        session.get(PaymentCharge, event.charge_id, with_for_update=True)
        if event.charge_id is not None
        else None
    )
    if charge is None or charge.payment_id != payment.id:
        raise InvalidInput(
            "No charge of this payment matches the event; give its charge_id.",
            code="unknown_charge",
        )
    if charge.status != "requested":
        return f"ignored: the charge is {charge.status} already"
    if event.type == "charge_captured":
        if event.amount_minor != charge.amount_minor or event.currency != charge.currency:
            raise states.AmountMismatch(
                "The charged amount or currency is not what was requested.",
                details={
                    "expected_minor": charge.amount_minor,
                    "expected_currency": charge.currency,
                    "amount_minor": event.amount_minor,
                    "currency": event.currency,
                },
            )
        payment.amount_minor += charge.amount_minor
        payment.captured_minor += charge.amount_minor
    charge.status = "captured" if event.type == "charge_captured" else "failed"
    charge.settled_at = now
    charge.psp_reference = event.psp_reference
    session.flush()
    return "applied"


def _refund_named(session: Session, payment: Payment, event: PaymentEventIn) -> Refund | None:
    """Find the refund an event reports: by its id, else the oldest open one of that amount."""
    if event.refund_id is not None:
        refund = session.get(Refund, event.refund_id, with_for_update=True)
        return refund if refund is not None and refund.payment_id == payment.id else None
    return session.scalar(
        select(Refund)
        .where(
            Refund.payment_id == payment.id,
            Refund.amount_minor == event.amount_minor,
            Refund.status != RefundStatus.SUCCEEDED,
        )
        .order_by(Refund.requested_at, Refund.id)
        .limit(1)
        .with_for_update()
    )
