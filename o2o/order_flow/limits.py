"""Limits that stop one account from hoarding stock: a few unpaid orders at once, and a cap on
the units of one product held across a patient's open orders."""

from collections.abc import Sequence

from sqlalchemy import Select, bindparam, func, select, true
from sqlalchemy.orm import Session

from o2o.config import get_settings
from o2o.errors import Conflict
from o2o.i18n import gettext as _
from o2o.orders import states
from o2o.orders.models import Order, OrderLine
from o2o.payments import service as payments_service
from o2o.users.models import User
from stores.cart import CartLine, validate_cart
from stores.models import Product


class TooManyOpenOrders(Conflict):
    code = "too_many_open_orders"


class TooManyOpenUnits(Conflict):
    code = "too_many_open_units"


def _caps_statement() -> Select:
    """What the caps read of a patient's open orders: the unpaid ones, and the units held of
    each product asked for (built once: building it and its cache key on every placement cost
    as much as running it)."""
    patient_id = bindparam("patient_id")
    held_units = (
        select(OrderLine.product_id, func.sum(OrderLine.quantity).label("units"))
        .join(Order, Order.id == OrderLine.order_id)
        .where(
            Order.patient_id == patient_id,
            Order.status.in_(states.OPEN_STATES),
            OrderLine.product_id.in_(bindparam("product_ids", expanding=True)),
        )
        .group_by(OrderLine.product_id)
        .subquery()
    )
    return select(
        payments_service.unpaid_open_orders(patient_id),
        select(
            func.jsonb_object_agg(held_units.c.product_id, held_units.c.units)
        ).scalar_subquery(),
    )


_CAPS = _caps_statement()


def _products_locking_patient() -> Select[tuple[Product, int]]:
    """The cart's products (by `ids`), read with the patient's row locked (by `patient_id`), in
    one statement. NO KEY UPDATE: it excludes another placement's lock, not the KEY SHARE lock a
    row that refers to the patient takes (the Idempotency-Key's claim, on a driver connection,
    must not wait for the patient's placement in flight). Joined on true, left: the products are
    read whatever the lock finds, and the lock is taken with the first of them (a cart with
    none is refused, `validate_cart`, before the caps are read); the lock's column is read too,
    so no planner may drop the join as unused."""
    lock = (
        select(User.id)
        .where(User.id == bindparam("patient_id"))
        .with_for_update(key_share=True)
        .cte("patient_lock")
    )
    return (
        select(Product, lock.c.id.label("locked_patient_id"))
        .outerjoin(lock, true())
        .where(Product.id.in_(bindparam("ids", expanding=True)))
    )


_PRODUCTS_LOCKING_PATIENT = _products_locking_patient()


def check_cart(
    session: Session, patient_id: int, cart: Sequence[tuple[int, int]]
) -> dict[int, Product]:
    """Check a new order's cart, (product id, quantity) a product (422:
    `stores.cart.validate_cart`), and the patient's caps (409); return the cart's products by
    id. One placement per patient at a time, so two at once cannot both slip under the caps:
    the products are read with the patient's lock taken in the same statement, and the caps
    after it. A cart refused (422) while another placement of the patient is under way is
    refused once that one has ended."""
    products = validate_cart(
        session,
        [CartLine(product_id, quantity) for product_id, quantity in cart],
        read=_PRODUCTS_LOCKING_PATIENT,
        params={"patient_id": patient_id},
    )
    _check_caps(session, patient_id, cart)
    return products


def _check_caps(session: Session, patient_id: int, cart: Sequence[tuple[int, int]]) -> None:
    """Refuse (409) a new order past the patient's unpaid-order or per-product unit cap; only
    with the patient's lock held (`check_cart` takes it)."""
    settings = get_settings()
    wanted = dict(cart)
    # Both caps in one statement, read after the lock (its snapshot then holds every order
    # the patient placed before).
    unpaid, held_by_id = session.execute(
        _CAPS, {"patient_id": patient_id, "product_ids": list(wanted)}
    ).one()
    if unpaid >= settings.max_unpaid_orders:
        raise TooManyOpenOrders(
            _(
                "You already have {unpaid} unpaid orders; pay or cancel one before placing another."
            ).format(unpaid=unpaid),
            details={"unpaid_orders": unpaid, "limit": settings.max_unpaid_orders},
        )
    held = {int(pid): int(units) for pid, units in (held_by_id or {}).items()}
    cap = settings.max_open_units_per_product
    over = [
        {"product_id": pid, "held": held.get(pid, 0), "requested": qty, "limit": cap}
        for pid, qty in sorted(wanted.items())
        if held.get(pid, 0) + qty > cap
    ]
    if over:
        raise TooManyOpenUnits(
            _("At most {cap} units of one product may be on your open orders at once.").format(
                cap=cap
            ),
            details={"products": over},
        )
