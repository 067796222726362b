"""Payments as the other floors reach them: open an order's payment at checkout, refund what a
cancelled order or a late delivery owes (subscribed to events by `o2o.wiring`), take money at the
counter, and read an order's payment and refunds.

Lock order everywhere: the order row first, then its payment row (the order flow, the expiry
sweep and the event intake all do the same), so a capture and an expiry never deadlock and one
of them sees what the other did.
"""

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from o2o import clock, outbox
from o2o.errors import Conflict
from o2o.i18n import gettext as _
from o2o.orders import states as order_states
from o2o.orders.models import Order, OrderStatus
from o2o.payments import apps, states
from o2o.payments.models import (
    Payment,
    PaymentApp,
    PaymentCharge,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from o2o.webhooks import relay

P = PaymentStatus

REASON_CANCELLED = "order_cancelled"
REASON_LATE = "late_delivery"
REASON_AFTER_CANCEL = "captured_after_cancel"
REASON_SUBSTITUTION = "substitution"


class PaymentsUnavailable(Conflict):
    code = "payments_unavailable"


class PaymentNotCollected(Conflict):
    code = "payment_not_collected"


def _send(session: Session, app_id: int, event_type: str, payment: Payment, payload: dict) -> None:
    """Write a request for the payment's app to the outbox, addressed to its endpoint only."""
    app = session.get(PaymentApp, app_id)
    event = outbox.emit(session, event_type, "payment", payment.id, payload)
    relay.address(session, event, app.webhook_endpoint_id)


def open_payment(
    session: Session, order: Order, *, method: PaymentMethod, due_at: datetime | None
) -> Payment:
    """Open the payment of a new order: online ones are requested from the payment app."""
    app = apps.current_app(session) if method is PaymentMethod.ONLINE else None
    if method is PaymentMethod.ONLINE and app is None:
        raise PaymentsUnavailable(
            _(
                "Online payment is not available right now; choose payment at the store for a pickup, or try again later."
            ),
        )
    payment = Payment(
        id=uuid.uuid4(),
        order_id=order.id,
        app_id=app.id if app else None,
        method=method,
        status=P.PENDING,
        amount_minor=order.total_minor,
        currency=order.currency,
        captured_minor=0,
        due_at=due_at,
        created_at=order.created_at,
    )
    session.add(payment)
    session.flush()
    if app is not None:
        _send(
            session,
            app.id,
            "payment.requested",
            payment,
            {
                "payment_id": str(payment.id),
                "order_id": str(order.id),
                "store_id": order.store_id,
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
                "due_at": due_at.isoformat() if due_at else None,
            },
        )
    return payment


def payment_of(session: Session, order_id: uuid.UUID, *, lock: bool = False) -> Payment | None:
    """Return an order's payment (locked if asked: lock the order first)."""
    query = select(Payment).where(Payment.order_id == order_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


def payments_of(session: Session, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, Payment]:
    """Return the payments of several orders at once, by order id."""
    if not order_ids:
        return {}
    rows = session.scalars(select(Payment).where(Payment.order_id.in_(order_ids)))
    return {p.order_id: p for p in rows}


def _refunds(session: Session, payment: Payment) -> list[Refund]:
    return list(
        session.scalars(
            select(Refund)
            .where(Refund.payment_id == payment.id)
            .order_by(Refund.requested_at, Refund.id)
        )
    )


def refund_ledger(session: Session, payment: Payment) -> list[tuple[RefundStatus, int]]:
    """Return (status, amount) of the payment's refunds (the refund rules' input)."""
    return [(r.status, r.amount_minor) for r in _refunds(session, payment)]


def request_refund(
    session: Session,
    payment: Payment,
    amount_minor: int,
    *,
    reason: str,
    note: str | None = None,
    now: datetime | None = None,
) -> Refund:
    """Request a refund of a locked, captured payment through the outbox (409 above what is
    left of the capture)."""
    now = now or clock.now()
    states.check_refund(amount_minor, payment.captured_minor, refund_ledger(session, payment))
    refund = Refund(
        id=uuid.uuid4(),
        payment_id=payment.id,
        amount_minor=amount_minor,
        currency=payment.currency,
        reason=reason,
        note=note,
        status=RefundStatus.REQUESTED,
        requested_at=now,
    )
    session.add(refund)
    session.flush()
    _send(
        session,
        payment.app_id,
        "payment.refund_requested",
        payment,
        {
            "refund_id": str(refund.id),
            "payment_id": str(payment.id),
            "order_id": str(payment.order_id),
            "amount_minor": amount_minor,
            "currency": payment.currency,
            "reason": reason,
            "psp_reference": payment.psp_reference,
        },
    )
    session.expire(payment, ["refunds"])
    return refund


def request_charge(
    session: Session,
    payment: Payment,
    amount_minor: int,
    *,
    reason: str,
    note: str | None = None,
    now: datetime | None = None,
) -> PaymentCharge:
    """Ask the app to charge a further amount on a locked, captured online payment (the card or
    wallet the patient paid with), through the outbox; the app reports `charge_captured` or
    `charge_failed` with the charge id, and a capture raises what the payment covers."""
    now = now or clock.now()
    if payment.method is not PaymentMethod.ONLINE or payment.status is not P.CAPTURED:
        raise Conflict(
            "Only a captured online payment can be charged a further amount.",
            code="payment_not_chargeable",
            details={"status": payment.status.value, "method": payment.method.value},
        )
    charge = PaymentCharge(
        id=uuid.uuid4(),
        payment_id=payment.id,
        amount_minor=amount_minor,
        currency=payment.currency,
        reason=reason,
        note=note,
        status="requested",
        requested_at=now,
    )
    session.add(charge)
    session.flush()
    _send(
        session,
        payment.app_id,
        "payment.charge_requested",
        payment,
        {
            "charge_id": str(charge.id),
            "payment_id": str(payment.id),
            "order_id": str(payment.order_id),
            "amount_minor": amount_minor,
            "currency": payment.currency,
            "reason": reason,
            "psp_reference": payment.psp_reference,
        },
    )
    return charge


def charges_of(session: Session, payment_id: uuid.UUID) -> list[PaymentCharge]:
    """Return a payment's further charges, oldest first."""
    return list(
        session.scalars(
            select(PaymentCharge)
            .where(PaymentCharge.payment_id == payment_id)
            .order_by(PaymentCharge.requested_at, PaymentCharge.id)
        )
    )


def refund_everything(
    session: Session, payment: Payment, *, reason: str, note: str | None = None
) -> Refund | None:
    """Refund all that is left of a locked, captured payment (none if nothing is left)."""
    amount = states.refund_for_cancel(payment.captured_minor, refund_ledger(session, payment))
    if amount <= 0:
        return None
    return request_refund(session, payment, amount, reason=reason, note=note)


def on_order_cancelled(session: Session, order: Order) -> None:
    """Close the payment of a cancelled order: an unpaid one is called off, a captured one is
    refunded in full (subscribed to `order_cancelled`)."""
    payment = payment_of(session, order.id, lock=True)
    if payment is None:
        return
    if payment.status in (P.PENDING, P.FAILED):
        payment.status = P.CANCELLED
        session.flush()
        if payment.app_id is not None:
            _send(
                session,
                payment.app_id,
                "payment.cancelled",
                payment,
                {"payment_id": str(payment.id), "order_id": str(order.id)},
            )
    elif payment.status is P.CAPTURED and payment.app_id is not None:
        refund_everything(session, payment, reason=REASON_CANCELLED, note=order.cancel_reason)


def on_sla_breached(session: Session, order_id: uuid.UUID, compensation_minor: int) -> None:
    """Pay out "late = free": refund the compensation of a breached delivery (subscribed to
    dispatch's `sla_breached`)."""
    payment = payment_of(session, order_id, lock=True)
    if payment is None or payment.status is not P.CAPTURED or payment.app_id is None:
        return
    already = sum(
        r.amount_minor
        for r in _refunds(session, payment)
        if r.reason == REASON_LATE and r.status is not RefundStatus.FAILED
    )
    amount = states.refund_for_late_delivery(
        compensation_minor - already, payment.captured_minor, refund_ledger(session, payment)
    )
    if amount > 0:
        request_refund(session, payment, amount, reason=REASON_LATE)


def collect_at_store(
    session: Session, order: Order, *, collected: bool, actor_id: int, now: datetime | None = None
) -> None:
    """At hand-over, take a pay-at-store order's money (409 unless the pharmacist confirms it)."""
    payment = payment_of(session, order.id, lock=True)
    if payment is None or payment.method is not PaymentMethod.AT_STORE:
        return
    if payment.status is P.CAPTURED:
        return
    if not collected:
        raise PaymentNotCollected(
            _(
                "Collect {amount_minor} ({currency}, minor units) at the counter and confirm it with payment_collected before handing the order over."
            ).format(amount_minor=payment.amount_minor, currency=payment.currency),
            details={"amount_minor": payment.amount_minor, "currency": payment.currency},
        )
    payment.status = P.CAPTURED
    payment.captured_minor = payment.amount_minor
    payment.captured_at = now or clock.now()
    payment.collected_by = actor_id
    session.flush()


def unpaid_open_orders(session: Session, patient_id: int) -> int:
    """Count a patient's open orders whose payment is not taken yet (online or at the store)."""
    return session.scalar(
        select(func.count())
        .select_from(Order)
        .join(Payment, Payment.order_id == Order.id)
        .where(
            Order.patient_id == patient_id,
            Order.status.in_(order_states.OPEN_STATES),
            Payment.status.in_((P.PENDING, P.FAILED)),
        )
    )


def is_unpaid_hold(order: Order, payment: Payment | None) -> bool:
    """Say whether an order holds stock without having paid (the first to give stock back)."""
    return order.status is OrderStatus.AWAITING_PAYMENT or (
        payment is not None and payment.status in (P.PENDING, P.FAILED)
    )
