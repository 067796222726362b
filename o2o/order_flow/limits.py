"""Limits that stop one account from hoarding stock: a few unpaid orders at once, and a cap on
the units of one product held across a patient's open orders."""

from collections.abc import Sequence

from sqlalchemy import Select, bindparam, func, select, text
from sqlalchemy.orm import Session

from o2o.config import get_settings
from o2o.errors import Conflict
from o2o.i18n import gettext as _
from o2o.orders import states
from o2o.orders.models import Order, OrderLine
from o2o.payments import service as payments_service


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
# NO KEY UPDATE: it excludes another placement's lock, not the KEY SHARE lock a row that refers to
# the patient takes (the Idempotency-Key's claim, on a driver connection, must not wait for the
# patient's placement in flight).
_LOCK_PATIENT = text("SELECT 1 FROM users WHERE id = :id FOR NO KEY UPDATE")


def check_hoarding(session: Session, patient_id: int, cart: Sequence[tuple[int, int]]) -> None:
    """Refuse (409) a new order past the patient's unpaid-order or per-product unit cap."""
    settings = get_settings()
    # One placement per patient at a time: two at once cannot both slip under the caps.
    session.execute(_LOCK_PATIENT, {"id": patient_id})
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
