"""Placing a split order (`allow_split`): a cart no single nearby store holds, filled in parts by
the fewest stores that hold it together (`stores.split_search`), paid once.

Each part is an ordinary order (its own store, routing, pickup and delivery codes, prescription
request, dispatch job and SLA), so store actions, cancel and complete work on it unchanged. The
`SplitOrder` row ties the parts together; the first part (the nearest store) holds the one
payment, for every part's total (`o2o.payments.service`). Every part's stock is reserved in the
one transaction of the request, store by store in store id order and within a store in lot id
order (`stores.allocation`), so two split orders over the same stores queue rather than deadlock,
and a part that cannot be reserved rolls every part back: all or nothing, never oversold.

A cart one store can fill is placed as an ordinary order, as without `allow_split`.
"""

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from dispatch import routing
from o2o import clock
from o2o.config import get_settings
from o2o.errors import InvalidInput
from o2o.geo import point_element
from o2o.members import service as members_service
from o2o.order_flow import checkout, limits, views
from o2o.order_flow.schemas import OrderIn, OrderOut, SplitOrderOut
from o2o.orders import lifecycle, states
from o2o.orders.models import Fulfillment, LotAllocation, Order, OrderLine, OrderStatus, SplitOrder
from o2o.payments import service as payments_service
from o2o.payments.models import PaymentMethod
from o2o.security import new_code
from o2o.users.models import User
from stores import allocation, split_search, statements, substitutes
from stores import service as stores_service
from stores.cart import CartLine
from stores.models import Product, Store


class InvalidSplit(InvalidInput):
    code = "invalid_split"


def _check_request(body: OrderIn) -> None:
    """Refuse what a split order cannot be (422 invalid_split)."""
    why = None
    if body.store_id is not None:
        why = "a split order is filled by the stores that hold the cart: leave out store_id"
    elif body.payment_method != PaymentMethod.ONLINE.value:
        why = "a split order is paid once, online: payment at each store is not offered"
    elif body.delivery_slot is not None:
        why = "a split order is delivered as soon as each part can be: leave out delivery_slot"
    elif body.fulfillment == "pickup_point":
        why = "a pickup point is served by one store's run: order from that store alone"
    if why:
        raise InvalidSplit(f"This order cannot be split: {why}.")


def place(
    session: Session,
    patient: User,
    body: OrderIn,
    *,
    now: datetime | None = None,
    reserve: allocation.Reserve = allocation.reserve_lines,
):
    """Place an order: with allow_split, in parts when no single store can fill the cart.

    Return the `checkout.Placed` order, or the `SplitOrder` when it was split (written, not committed).
    `reserve` takes the stock, as in `checkout.place`."""
    if not body.allow_split:
        return checkout.place(session, patient, body, now=now, reserve=reserve)
    _check_request(body)
    now = now or clock.now()
    try:
        with session.begin_nested():
            return checkout.place(session, patient, body, now=now, reserve=reserve)
    except (allocation.InsufficientStock, routing.DeliveryUnavailable) as single_store_refusal:
        # No store holds the cart (or none that delivers here does): try it in parts.
        refusal = single_store_refusal
    split = place_split(session, patient, body, now=now, reserve=reserve)
    if split is None:
        raise refusal
    return split


def _unit_price(chosen: Sequence[allocation.Allocation], quantity: int) -> int:
    """Return the unit price over the lots allocated, rounded half up to a minor unit."""
    total = sum(a.quantity * a.price_minor for a in chosen)
    return (2 * total + quantity) // (2 * quantity)


def place_split(
    session: Session,
    patient: User,
    body: OrderIn,
    *,
    now: datetime,
    reserve: allocation.Reserve = allocation.reserve_lines,
) -> SplitOrder | None:
    """Place the cart in parts at the fewest stores that hold it (None if no 3 stores do)."""
    settings = get_settings()
    cart = body.merged_items()
    lines = [CartLine(product_id, quantity) for product_id, quantity in cart]
    products: dict[int, Product] = limits.check_cart(session, patient.id, cart)
    address = body.delivery_address if body.fulfillment != "pickup" else None
    plan = split_search.plan_cart(
        session,
        lat=body.location.lat,
        lon=body.location.lon,
        lines=lines,
        fulfillment={"auto": "any"}.get(body.fulfillment, body.fulfillment),
        delivery_point=(address.location.lat, address.location.lon) if address else None,
        now=now,
    )
    if plan is None:
        return None

    # Route each part as an order placed at its store (pickup or delivery, with the reason).
    decisions = []
    for part in plan.parts:
        part_body = body.model_copy(
            update={
                "store_id": part.store_id,
                "allow_split": False,
                "items": [{"product_id": p, "quantity": q} for p, q in part.items],
            }
        )
        part_lines = [CartLine(p, q) for p, q in part.items]
        decisions.append(checkout.route(session, part_body, part_lines, now=now))

    currencies = {session.get(Store, part.store_id).currency for part in plan.parts}
    if len(currencies) > 1:
        raise InvalidSplit(
            "The stores that hold your cart price in different currencies; it cannot be paid once.",
            details={"currencies": sorted(currencies)},
        )
    # Reserve store by store in id order: the lock order every split order shares.
    reserved: dict[int, dict[int, list[allocation.Allocation]]] = {}
    try:
        for part in sorted(plan.parts, key=lambda p: p.store_id):
            store = session.get(Store, part.store_id)
            reserved[part.store_id] = reserve(
                session,
                store.id,
                [allocation.LineRequest(p, q) for p, q in part.items],
                min_expiry=stores_service.min_sellable_expiry(store, now),
            )
    except allocation.InsufficientStock as exc:
        raise exc.naming({pid: products[pid].name for pid in products}) from None

    allowed = substitutes.allowed_products(products, body.substitution_wishes())
    split = SplitOrder(id=uuid.uuid4(), patient_id=patient.id, created_at=now)
    session.add(split)
    session.flush()
    hold = states.payment_hold_expires(now, settings.payment_minutes)
    parts = []
    for position, (part, decision) in enumerate(zip(plan.parts, decisions, strict=True)):
        store = session.get(Store, part.store_id)
        delivery = decision.fulfillment == Fulfillment.DELIVERY.value
        order = Order(
            id=uuid.uuid4(),
            patient_id=patient.id,
            store_id=store.id,
            status=OrderStatus.AWAITING_PAYMENT,
            fulfillment=Fulfillment(decision.fulfillment),
            requested_fulfillment=body.fulfillment,
            routing_reason=decision.reason,
            patient_location=point_element(body.location.lat, body.location.lon),
            delivery_location=(
                point_element(address.location.lat, address.location.lon) if delivery else None
            ),
            delivery_address_text=address.text if delivery else None,
            currency=store.currency,
            subtotal_minor=0,
            delivery_fee_minor=store.delivery_fee_minor if delivery else 0,
            compensation_minor=0,
            pickup_code=new_code(),
            delivery_code=new_code(),
            pickup_code_failures=0,
            created_at=now,
            hold_expires_at=hold,
            split_order_id=split.id,
            split_position=position,
        )
        subtotal = 0
        for product_id, quantity in part.items:
            chosen = reserved[part.store_id][product_id]
            price = _unit_price(chosen, quantity)
            subtotal += price * quantity
            order.lines.append(
                OrderLine(
                    product_id=product_id,
                    quantity=quantity,
                    price_minor=price,
                    rx_only=products[product_id].rx_only,
                    # The patient's consent to an equivalent at the counter, as checkout records.
                    substitution="allowed" if product_id in allowed else "not_allowed",
                    allocations=[
                        LotAllocation(lot_id=a.lot_id, quantity=a.quantity) for a in chosen
                    ],
                )
            )
        order.subtotal_minor = subtotal
        lifecycle.create(session, order, actor_id=patient.id, at=now)
        parts.append(order)
    for order in parts:
        # A member's free delivery applies to every delivering part, as to a whole order.
        members_service.apply_benefits(session, order, now=now)
    payments_service.open_payment(
        session,
        parts[0],
        method=PaymentMethod.ONLINE,
        due_at=hold,
        amount_minor=sum(order.total_minor for order in parts),
    )
    session.flush()
    session.expire(split, ["parts"])
    return split


def place_and_present(
    session: Session, patient: User, body: OrderIn, *, record: Callable[[dict], None] | None = None
) -> dict:
    """Place the order, build its answer (and `record` it, e.g. for its Idempotency-Key), take
    its stock as the transaction's last statements and commit. The lots' UPDATEs and the
    COMMIT go to the database together (`allocation.StockLast.take_and_commit`): buyers of one
    hot product queue only for those, never for each other's whole placement (routing, the
    order's rows, its payment, its answer), nor for a round trip back to the application.

    When another order took the planned units first, the work is rolled back and done again
    with the lots chosen under lock: the sell-out stays exact, only that order is slower.

    An order for a delivery slot or a pickup point takes its stock at once, as before: it
    books the slot, or the point's run, which other writers lock after the lots, so taking
    the lots last could deadlock with them.

    Its nearest-first walks run without savepoints (two statements fewer each): in the rare
    case the index refuses one (`stores.statements.WalkRefused`), the work is rolled back and
    done again with each walk guarded."""
    try:
        with statements.redone_on_refusal(session):
            return _place_and_present(session, patient, body, record)
    except statements.WalkRefused:
        session.rollback()
    return _place_and_present(session, patient, body, record)


def _place_and_present(
    session: Session, patient: User, body: OrderIn, record: Callable[[dict], None] | None
) -> dict:
    if body.delivery_slot is not None or body.fulfillment == "pickup_point":
        payload = _placed(session, patient, body, allocation.reserve_lines, record)
        session.commit()
        return payload
    stock = allocation.StockLast()
    payload = _placed(session, patient, body, stock, record)
    try:
        stock.take_and_commit(session)
    except allocation.StockMoved:
        session.rollback()
        payload = _placed(session, patient, body, allocation.reserve_lines, record)
        session.commit()
    return payload


def _placed(session, patient, body, reserve, record) -> dict:
    payload = present(session, place(session, patient, body, reserve=reserve), patient)
    payload = payload.model_dump(mode="json")
    if record is not None:
        record(payload)
    return payload


def present(session: Session, placed, viewer: User) -> OrderOut | SplitOrderOut:
    """Build the answer for a new order or split order (codes only for its own patient)."""
    if isinstance(placed, checkout.Placed):
        # What a new order's view would read back is known: its store's name, its payment and
        # waiver, and no substitution yet (its timeline is set as it is recorded).
        order = placed.order
        return views.present(
            session,
            order,
            viewer,
            store_names={order.store_id: placed.store.name},
            payments={order.id: placed.payment},
            waivers={order.id: placed.waiver} if placed.waiver is not None else {},
            substitution_lists={},
        )
    return present_split(session, placed, viewer)


def present_split(session: Session, split: SplitOrder, viewer: User) -> SplitOrderOut:
    """Build a split order's view: every part as an order, the whole's status and payment."""
    parts = [views.present(session, order, viewer) for order in split.parts]
    live = [p for p in parts if p.status is not OrderStatus.CANCELLED]
    return SplitOrderOut(
        id=split.id,
        status=states.split_status([p.status for p in parts]),
        parts=parts,
        subtotal_minor=sum(p.subtotal_minor for p in live),
        delivery_fee_minor=sum(p.delivery_fee_minor for p in live),
        total_minor=sum(p.total_minor for p in live),
        currency=parts[0].currency,
        created_at=split.created_at,
        payment=parts[0].payment,
        refunds=parts[0].refunds,
    )
