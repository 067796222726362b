"""Orders as a caller sees them: the paged list and the order view."""

import uuid
from collections.abc import Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from o2o import pagination
from o2o.errors import Forbidden, NotFound
from o2o.geo import to_latlon
from o2o.i18n import gettext as _
from o2o.members import service as members_service
from o2o.members.models import DeliveryWaiver
from o2o.order_flow import substitutions
from o2o.order_flow.schemas import OrderOut
from o2o.order_flow.store_actions import pickup_qr
from o2o.orders.models import Fulfillment, Order, OrderStatus
from o2o.payments import service as payments_service
from o2o.payments.models import Payment
from o2o.users.models import Role, User
from prescriptions import service as prescriptions_service
from stores.models import Store

ORDERS_LISTING = "orders"


def list_orders(
    session: Session,
    user: User,
    *,
    store_id: int | None = None,
    status: OrderStatus | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> tuple[list[Order], str | None]:
    """List the orders a caller may see, newest first: a patient's own, or a store's for staff."""
    query = select(Order)
    if user.role is Role.PATIENT:
        query = query.where(Order.patient_id == user.id)
        if store_id is not None:
            query = query.where(Order.store_id == store_id)
    elif user.role is Role.PHARMACIST:
        if store_id is not None and store_id not in user.store_ids:
            raise NotFound(_("No such store."), code="store_not_found")
        query = query.where(Order.store_id.in_([store_id] if store_id else user.store_ids))
    elif user.role is Role.ADMIN:
        if store_id is not None:
            query = query.where(Order.store_id == store_id)
    else:
        raise Forbidden(_("Your role may not read orders."))
    if status is not None:
        query = query.where(Order.status == status)
    if cursor:
        created, order_id = pagination.decode_cursor(
            cursor, ORDERS_LISTING, [pagination.timestamp, pagination.identifier]
        )
        query = query.where(
            or_(
                Order.created_at < created,
                and_(Order.created_at == created, Order.id < order_id),
            )
        )
    rows = session.scalars(
        query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
    ).all()
    page = list(rows[:limit])
    if len(rows) <= limit:
        return page, None
    return page, pagination.encode_cursor(ORDERS_LISTING, [page[-1].created_at, page[-1].id])


# The view --------------------------------------------------------------------------------------


def prescription_id_for(session: Session, order: Order) -> uuid.UUID | None:
    """Ask the prescriptions domain which prescription belongs to the order (the one place)."""
    if not order.is_rx:
        return None
    return prescriptions_service.prescription_id_for_order(session, order.id)


def present(
    session: Session,
    order: Order,
    viewer: User,
    *,
    store_names: dict[int, str] | None = None,
    prescription_ids: dict[uuid.UUID, uuid.UUID] | None = None,
    payments: dict[uuid.UUID, Payment] | None = None,
    waivers: dict[uuid.UUID, DeliveryWaiver] | None = None,
    with_safety: bool = False,
    substitution_lists: dict | None = None,
) -> OrderOut:
    """Build the order view for this viewer (codes only for the order's own patient); a page
    passes the store names and prescription ids it read at once. `with_safety` adds the
    pharmacist's allergy and interaction warnings."""
    if store_names is None or order.store_id not in store_names:
        store = session.get(Store, order.store_id)
        name = store.name if store else ""
    else:
        name = store_names[order.store_id]
    own = viewer.role is Role.PATIENT and viewer.id == order.patient_id
    payment = (
        payments.get(order.id)
        if payments is not None
        else payments_service.payment_of(session, order.id)
    )
    if waivers is None:
        waivers = members_service.waivers_of(session, [order.id])
    waiver = waivers.get(order.id)
    address = None
    if order.delivery_location is not None:
        address = {
            "location": to_latlon(order.delivery_location),
            "text": order.delivery_address_text,
        }
    return OrderOut(
        id=order.id,
        status=order.status,
        fulfillment=order.fulfillment,
        store={"id": order.store_id, "name": name},
        routing_reason=order.routing_reason,
        lines=[
            {
                "product_id": line.product_id,
                "quantity": line.quantity,
                "price_minor": line.price_minor,
                "requested_product_id": line.requested_product_id,
                "substitution": line.substitution,
                "substitution_reason": line.substitution_reason,
            }
            for line in order.lines
        ],
        subtotal_minor=order.subtotal_minor,
        delivery_fee_minor=order.delivery_fee_minor,
        delivery_fee_waiver=(
            {
                "amount_minor": waiver.amount_minor,
                "currency": waiver.currency,
                "level": waiver.level,
                "reason": waiver.reason,
            }
            if waiver is not None
            else None
        ),
        compensation_minor=order.compensation_minor,
        total_minor=order.total_minor,
        currency=order.currency,
        delivery_address=address,
        created_at=order.created_at,
        released_at=order.released_at,
        ready_at=order.ready_at,
        completed_at=order.completed_at,
        cancelled_at=order.cancelled_at,
        cancel_reason=order.cancel_reason,
        sla_deadline=order.sla_deadline,
        prepare_from=order.prepare_from,
        delivery_slot=(
            {"start": order.delivery_slot_start, "end": order.delivery_slot_end}
            if order.delivery_slot_start is not None
            else None
        ),
        hold_expires_at=order.hold_expires_at,
        stock_short_at=order.stock_short_at,
        prescription_id=(
            prescription_ids.get(order.id)
            if prescription_ids is not None
            else prescription_id_for(session, order)
        ),
        pickup_code=order.pickup_code if own else None,
        pickup_qr=(
            pickup_qr(order)
            if own and order.fulfillment in (Fulfillment.PICKUP, Fulfillment.PICKUP_POINT)
            else None
        ),
        pickup_point_id=order.pickup_point_id,
        delivery_code=order.delivery_code if own else None,
        timeline=[{"status": e.to_status, "at": e.at, "reason": e.reason} for e in order.events],
        payment=_payment_view(payment),
        refunds=[_refund_view(r) for r in payment.refunds] if payment is not None else [],
        safety=prescriptions_service.order_safety(session, order) if with_safety else None,
        substitutions=[
            substitutions.view(sub)
            for sub in (
                substitution_lists.get(order.id, [])
                if substitution_lists is not None
                else substitutions.substitutions_of(session, [order.id]).get(order.id, [])
            )
        ],
        split_order_id=order.split_order_id,
    )


def _payment_view(payment: Payment | None) -> dict | None:
    if payment is None:
        return None
    return {
        "id": payment.id,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "due_at": payment.due_at,
        "status": payment.status,
        "method": payment.method,
        "captured_minor": payment.captured_minor,
        "captured_at": payment.captured_at,
    }


def _refund_view(refund) -> dict:
    return {
        "id": refund.id,
        "amount_minor": refund.amount_minor,
        "currency": refund.currency,
        "reason": refund.reason,
        "status": refund.status,
        "requested_at": refund.requested_at,
        "settled_at": refund.settled_at,
    }


def present_many(session: Session, orders: Sequence[Order], viewer: User) -> list[OrderOut]:
    """Build views for a page of orders (store names and prescriptions read once)."""
    ids = sorted({o.store_id for o in orders})
    names = dict(session.execute(select(Store.id, Store.name).where(Store.id.in_(ids))).all())
    rx = prescriptions_service.prescription_ids_for_orders(
        session, [o.id for o in orders if o.is_rx]
    )
    payments = payments_service.payments_of(session, [o.id for o in orders])
    subs = substitutions.substitutions_of(session, [o.id for o in orders])
    waivers = members_service.waivers_of(session, [o.id for o in orders])
    return [
        present(
            session,
            o,
            viewer,
            store_names=names,
            prescription_ids=rx,
            payments=payments,
            substitution_lists=subs,
            waivers=waivers,
        )
        for o in orders
    ]
