"""The order state machine as plain data: the one place that knows the legal transitions.

Pure: no database. `lifecycle.py` applies a checked transition to a locked order row.
"""

from datetime import datetime, timedelta

from o2o.errors import Conflict
from o2o.i18n import gettext as _
from o2o.orders.models import Fulfillment, OrderStatus

S = OrderStatus

# to-state -> from-states; fulfillment-specific rules in `allowed`.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    # Paid: a cart with prescription-only items waits for its prescription, any other is released.
    S.AWAITING_PRESCRIPTION: frozenset({S.AWAITING_PAYMENT}),
    S.RELEASED: frozenset({S.AWAITING_PAYMENT, S.AWAITING_PRESCRIPTION}),
    S.PREPARING: frozenset({S.RELEASED}),
    S.READY: frozenset({S.PREPARING, S.OUT_FOR_DELIVERY}),  # a failed delivery comes back
    S.OUT_FOR_DELIVERY: frozenset({S.READY}),
    S.COMPLETED: frozenset({S.READY, S.OUT_FOR_DELIVERY}),
    S.CANCELLED: frozenset(
        {
            S.AWAITING_PAYMENT,
            S.AWAITING_PRESCRIPTION,
            S.RELEASED,
            S.PREPARING,
            S.READY,
            S.OUT_FOR_DELIVERY,
        }
    ),
}

OPEN_STATES = frozenset(s for s in OrderStatus if s not in (S.COMPLETED, S.CANCELLED))
# States in which the order holds reserved stock.
HOLDING_STOCK = OPEN_STATES
# The patient may cancel until the courier has it.
PATIENT_CANCELLABLE = frozenset(
    {S.AWAITING_PAYMENT, S.AWAITING_PRESCRIPTION, S.RELEASED, S.PREPARING, S.READY}
)


class IllegalTransition(Conflict):
    code = "illegal_transition"


def allowed(current: OrderStatus, to: OrderStatus, fulfillment: Fulfillment) -> bool:
    """Say whether an order may go from current to `to`."""
    if current not in TRANSITIONS.get(to, frozenset()):
        return False
    if to is S.OUT_FOR_DELIVERY or (to is S.READY and current is S.OUT_FOR_DELIVERY):
        # A pickup-point parcel rides the store's run and is ready again at the point.
        return fulfillment in (Fulfillment.DELIVERY, Fulfillment.PICKUP_POINT)
    if to is S.COMPLETED:
        # Pickup completes at the counter (from ready), a pickup point at the leader's counter
        # (ready at the point); delivery at the door.
        expected = S.OUT_FOR_DELIVERY if fulfillment is Fulfillment.DELIVERY else S.READY
        return current is expected
    return True


def after_payment(is_rx: bool) -> OrderStatus:
    """Return where a paid order goes: its prescription first for prescription-only items."""
    return S.AWAITING_PRESCRIPTION if is_rx else S.RELEASED


def check(current: OrderStatus, to: OrderStatus, fulfillment: Fulfillment) -> None:
    """Raise IllegalTransition (409) unless the transition is legal."""
    if not allowed(current, to, fulfillment):
        raise IllegalTransition(
            _("An order that is {status} cannot become {new_status}.").format(
                status=current.value.replace("_", " "), new_status=to.value.replace("_", " ")
            ),
            details={"status": current.value, "requested": to.value},
        )


def sla_deadline(released_at: datetime, sla_minutes: int) -> datetime:
    """Return the hand-over deadline of a delivery released at `released_at` (the 2-hour promise
    is `sla_minutes` from release)."""
    return released_at + timedelta(minutes=sla_minutes)


def prescription_hold_expires(paid_at: datetime, rx_wait_hours: int) -> datetime:
    """Return when a paid prescription order gives its stock back if no prescription is approved."""
    return paid_at + timedelta(hours=rx_wait_hours)


def payment_hold_expires(placed_at: datetime, payment_minutes: int) -> datetime:
    """Return the payment deadline of an order placed at `placed_at`."""
    return placed_at + timedelta(minutes=payment_minutes)


# A split order's parts move on independently; the whole is as far along as its least advanced
# open part (a patient waits for every part), in this order.
PROGRESS = (
    S.AWAITING_PAYMENT,
    S.AWAITING_PRESCRIPTION,
    S.RELEASED,
    S.PREPARING,
    S.READY,
    S.OUT_FOR_DELIVERY,
)


def split_status(part_statuses: list[OrderStatus]) -> OrderStatus:
    """Return a split order's status from its parts': cancelled when all are, completed when
    every part not cancelled is, else the least advanced open part's."""
    if not part_statuses:
        raise ValueError("a split order has parts")
    live = [s for s in part_statuses if s is not S.CANCELLED]
    if not live:
        return S.CANCELLED
    open_parts = [s for s in live if s in OPEN_STATES]
    if not open_parts:
        return S.COMPLETED
    return min(open_parts, key=PROGRESS.index)
