"""Payments as the other floors reach them: open an order's payment at checkout, refund what a
cancelled order or a late delivery owes (subscribed to events by `o2o.wiring`), take money at the
counter, and read an order's payment and refunds.

Lock order everywhere: the order row first, then its payment row (the order flow, the expiry
sweep and the event intake all do the same), so a capture and an expiry never deadlock and one
of them sees what the other did.

A split order (`o2o.orders.models.SplitOrder`) is paid once: its first part holds the one
payment, for the whole amount, and every part reads it as its own (`payment_of`). A part
cancelled after the capture is refunded its own total from that payment; a part cancelled before
it is refunded when the capture comes (the app was asked for the whole amount), and when every
part is cancelled first the payment is called off. The event intake locks every part before the
payment, so the lock order holds for splits too.
"""

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.selectable import ScalarSelect

from o2o import clock, db, outbox
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


_PAYMENT_COLUMNS, _PAYMENT_VALUES, _PAYMENT_PARAMS = db.insert_values(Payment.__table__, "payment_")
_INSERT_PAYMENT = f"INSERT INTO payments ({_PAYMENT_COLUMNS}) VALUES ({_PAYMENT_VALUES})"
_OPEN = text(_INSERT_PAYMENT).bindparams(*_PAYMENT_PARAMS)
# An online payment, to the app new online payments go to (`apps.CURRENT_APP_SQL`), with its
# request in the outbox and the request's delivery to that app's endpoint alone (as `_send` writes
# a request), in one statement, which answers the app's id. With no app active, the payment has
# none, which its table refuses (ONLINE_HAS_APP): nothing is written.
_APP_COLUMN = "app_id"
_ONLINE_VALUES, _ONLINE_PARAMS = db.insert_values(
    Payment.__table__, "payment_", computed={_APP_COLUMN: "(SELECT id FROM app)"}
)[1:]
_OPEN_AND_REQUEST = text(
    f"""
    WITH app AS ({apps.CURRENT_APP_SQL}),
    payment AS (INSERT INTO payments ({_PAYMENT_COLUMNS}) VALUES ({_ONLINE_VALUES})),
    request AS (
        INSERT INTO outbox_events (id, event_type, aggregate_type, aggregate_id, payload)
        SELECT :request_id, 'payment.requested', 'payment', CAST(:payment_id AS text),
               :request_payload
        FROM app
    )
    INSERT INTO outbox_deliveries (event_id, endpoint_id, next_attempt_at)
    SELECT :request_id, app.webhook_endpoint_id, :request_at FROM app
    RETURNING (SELECT id FROM app)
    """
).bindparams(*_ONLINE_PARAMS, bindparam("request_payload", type_=JSONB))
ONLINE_HAS_APP = "ck_payments_online_has_app"


def open_payment(
    session: Session,
    order: Order,
    *,
    method: PaymentMethod,
    due_at: datetime | None,
    amount_minor: int | None = None,
) -> Payment:
    """Open the payment of a new order: online ones are requested from the payment app. The
    order's row must be written already (`o2o.orders.lifecycle.create`); the payment and its
    request are written at once, in one statement.

    `amount_minor`: what is to be paid when it is not the order's own total (a split order's
    first part pays for every part).

    With no payment app active, an online payment raises PaymentsUnavailable (409) after its
    statement was refused: the transaction (or the caller's savepoint) is aborted, and the
    caller rolls it back, as it does on any refusal."""
    payment = Payment(
        id=uuid.uuid4(),
        order_id=order.id,
        app_id=None,  # an online payment's is chosen by its statement
        method=method,
        status=P.PENDING,
        amount_minor=order.total_minor if amount_minor is None else amount_minor,
        currency=order.currency,
        captured_minor=0,
        due_at=due_at,
        created_at=order.created_at,
    )
    if method is not PaymentMethod.ONLINE:
        session.execute(_OPEN, db.written_values(payment, "payment_"))
    else:
        values = db.written_values(payment, "payment_", skip=(_APP_COLUMN,))
        request = {
            "payment_id": str(payment.id),
            "order_id": str(order.id),
            "store_id": order.store_id,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "due_at": due_at.isoformat() if due_at else None,
        }
        try:
            payment.app_id = session.scalar(
                _OPEN_AND_REQUEST,
                {
                    **values,
                    "request_id": uuid.uuid4(),
                    "request_payload": request,
                    "request_at": clock.now(),
                },
            )
        except IntegrityError as exc:
            if getattr(getattr(exc.orig, "diag", None), "constraint_name", None) != ONLINE_HAS_APP:
                raise
            raise PaymentsUnavailable(
                _(
                    "Online payment is not available right now; choose payment at the store for a pickup, or try again later."
                ),
            ) from None
    set_committed_value(payment, "refunds", [])  # a new payment has none: no read to know it
    db.attach_written(session, payment)
    return payment


def _payer_id(session: Session, order_id: uuid.UUID) -> uuid.UUID:
    """Return the order whose payment pays for this one: itself, or its split order's first part."""
    order = session.get(Order, order_id)
    if order is None or order.split_order_id is None or order.split_position == 0:
        return order_id
    return session.scalar(
        select(Order.id).where(
            Order.split_order_id == order.split_order_id, Order.split_position == 0
        )
    )


def split_parts(session: Session, order: Order, *, lock: bool = False) -> list[Order]:
    """Return the orders one payment pays for: the order alone, or every part of its split
    order (locked in id order if asked, which the caller does before locking the payment)."""
    if order.split_order_id is None:
        return [order]
    query = select(Order).where(Order.split_order_id == order.split_order_id).order_by(Order.id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return list(session.scalars(query))


def payment_of(session: Session, order_id: uuid.UUID, *, lock: bool = False) -> Payment | None:
    """Return an order's payment, a split part's being its split order's (locked if asked:
    lock the order first)."""
    query = select(Payment).where(Payment.order_id == _payer_id(session, order_id))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


def payments_of(session: Session, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, Payment]:
    """Return the payments of several orders at once, by order id."""
    if not order_ids:
        return {}
    payers = {order_id: _payer_id(session, order_id) for order_id in order_ids}
    rows = session.scalars(select(Payment).where(Payment.order_id.in_(set(payers.values()))))
    by_payer = {p.order_id: p for p in rows}
    return {order_id: by_payer[payer] for order_id, payer in payers.items() if payer in by_payer}


def _refunds(session: Session, payment: Payment) -> list[Refund]:
    return list(
        session.scalars(
            select(Refund)
            .where(Refund.payment_id == payment.id)
            .order_by(Refund.requested_at, Refund.id)
        )
    )


def paid_for(session: Session, payment: Payment, order_id: uuid.UUID) -> int:
    """What the patient has paid for one order once its confirmed refunds are taken off: the
    capture less every confirmed refund, or, for a part of the split order the payment covers,
    the part's total less the confirmed refunds for that part."""
    refunds = _refunds(session, payment)
    order = session.get(Order, order_id)
    if order.split_order_id is None:
        paid, own = payment.captured_minor, refunds
    else:
        paid, own = order.total_minor, [r for r in refunds if r.order_id == order_id]
    given_back = sum(r.amount_minor for r in own if r.status is RefundStatus.SUCCEEDED)
    return max(0, paid - given_back)


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
    order_id: uuid.UUID | None = None,
) -> Refund:
    """Request a refund of a locked, captured payment through the outbox (409 above what is
    left of the capture), for its order or (order_id) a part of the split order it pays."""
    now = now or clock.now()
    states.check_refund(amount_minor, payment.captured_minor, refund_ledger(session, payment))
    refund = Refund(
        id=uuid.uuid4(),
        payment_id=payment.id,
        order_id=order_id or payment.order_id,
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
            # The part of a split order refunded (the payment's own order otherwise).
            "for_order_id": str(refund.order_id),
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
    if order.split_order_id is not None:
        _on_part_cancelled(session, order, payment)
        return
    if payment.status in (P.PENDING, P.FAILED):
        _call_off(session, payment)
    elif payment.status is P.CAPTURED and payment.app_id is not None:
        refund_everything(session, payment, reason=REASON_CANCELLED, note=order.cancel_reason)


def _call_off(session: Session, payment: Payment) -> None:
    """Cancel a locked payment not captured: its order will not be paid."""
    payment.status = P.CANCELLED
    session.flush()
    if payment.app_id is not None:
        _send(
            session,
            payment.app_id,
            "payment.cancelled",
            payment,
            {"payment_id": str(payment.id), "order_id": str(payment.order_id)},
        )


def _on_part_cancelled(session: Session, part: Order, payment: Payment) -> None:
    """Close what a cancelled part of a split order owes: its own total back from a captured
    payment; before the capture, nothing yet unless every part is now cancelled."""
    if payment.status is P.CAPTURED:
        if payment.app_id is not None:
            _refund_part(session, payment, part, reason=REASON_CANCELLED, note=part.cancel_reason)
        return
    # Read under the payment's lock: a part cancelled at the same time committed before it.
    statuses = session.scalars(
        select(Order.status).where(Order.split_order_id == part.split_order_id)
    ).all()
    if all(status is OrderStatus.CANCELLED for status in statuses):
        _call_off(session, payment)


def _refund_part(
    session: Session, payment: Payment, part: Order, *, reason: str, note: str | None
) -> Refund | None:
    """Refund a part's total from a locked, captured payment (what is left of it, at most)."""
    left = states.refund_for_cancel(payment.captured_minor, refund_ledger(session, payment))
    amount = min(part.total_minor, left)
    if amount <= 0:
        return None
    return request_refund(session, payment, amount, reason=reason, note=note, order_id=part.id)


def refund_cancelled_parts(session: Session, payment: Payment, parts: list[Order]) -> None:
    """Refund, on a capture just applied, the parts of a split order cancelled before it."""
    if len(parts) < 2 or payment.app_id is None:
        return
    for part in parts:
        if part.status is OrderStatus.CANCELLED:
            _refund_part(
                session,
                payment,
                part,
                reason=REASON_AFTER_CANCEL,
                note="This part was cancelled before the payment arrived.",
            )


def on_sla_breached(session: Session, order_id: uuid.UUID, compensation_minor: int) -> None:
    """Pay out "late = free": refund the compensation of a breached delivery (subscribed to
    dispatch's `sla_breached`)."""
    payment = payment_of(session, order_id, lock=True)
    if payment is None or payment.status is not P.CAPTURED or payment.app_id is None:
        return
    # This order's compensation (a part of a split order is compensated on its own).
    already = sum(
        r.amount_minor
        for r in _refunds(session, payment)
        if r.reason == REASON_LATE
        and r.order_id == order_id
        and r.status is not RefundStatus.FAILED
    )
    amount = states.refund_for_late_delivery(
        compensation_minor - already, payment.captured_minor, refund_ledger(session, payment)
    )
    if amount > 0:
        request_refund(session, payment, amount, reason=REASON_LATE, order_id=order_id)


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


def unpaid_open_orders(patient_id: int | ColumnElement[int]) -> ScalarSelect[int]:
    """Count a patient's open orders whose payment is not taken yet (online or at the store), as
    a subquery for the caller's statement (the patient's id, or a bound parameter for it)."""
    return (
        select(func.count())
        .select_from(Order)
        .join(Payment, Payment.order_id == Order.id)
        .where(
            Order.patient_id == patient_id,
            Order.status.in_(order_states.OPEN_STATES),
            Payment.status.in_((P.PENDING, P.FAILED)),
        )
        .scalar_subquery()
    )


def is_unpaid_hold(order: Order, payment: Payment | None) -> bool:
    """Say whether an order holds stock without having paid (the first to give stock back)."""
    return order.status is OrderStatus.AWAITING_PAYMENT or (
        payment is not None and payment.status in (P.PENDING, P.FAILED)
    )
