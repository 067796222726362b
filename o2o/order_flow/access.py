"""Who may see and act on an order: its patient, its store's staff, an admin."""

import uuid

from sqlalchemy.orm import Session

from o2o.errors import Forbidden, NotFound
from o2o.i18n import gettext as _
from o2o.orders import lifecycle
from o2o.orders.models import Order, SplitOrder
from o2o.users.models import Role, User

ORDER_READERS = frozenset({Role.PATIENT, Role.PHARMACIST, Role.ADMIN})
STORE_STAFF = frozenset({Role.PHARMACIST, Role.ADMIN})


def _not_found() -> NotFound:
    return NotFound(_("No such order."), code="order_not_found")


def can_see(user: User, order: Order) -> bool:
    """Say whether the user may see this order (its patient, its store's staff, an admin)."""
    if user.role is Role.ADMIN:
        return True
    if user.role is Role.PATIENT:
        return order.patient_id == user.id
    if user.role is Role.PHARMACIST:
        return order.store_id in user.store_ids
    return False


def is_store_staff_for(user: User, order: Order) -> bool:
    return user.role is Role.ADMIN or (
        user.role is Role.PHARMACIST and order.store_id in user.store_ids
    )


def get_order(session: Session, user: User, order_id: uuid.UUID, *, lock: bool = False) -> Order:
    """Load an order the user may see (locked FOR UPDATE if asked); 404 otherwise."""
    if user.role not in ORDER_READERS:
        raise Forbidden(_("Your role may not read orders."))
    if lock:
        try:
            order = lifecycle.lock_order(session, order_id)
        except NotFound:
            raise _not_found() from None
    else:
        order = session.get(Order, order_id)
    # Someone else's order looks exactly like one that does not exist.
    if order is None or not can_see(user, order):
        raise _not_found()
    return order


def get_order_for_staff(session: Session, user: User, order_id: uuid.UUID) -> Order:
    """Load and lock an order for its store's staff (or an admin); 404 for anyone else's."""
    if user.role not in STORE_STAFF:
        raise Forbidden(_("Only the store's staff may do this."))
    order = get_order(session, user, order_id, lock=True)
    if not is_store_staff_for(user, order):
        raise _not_found()
    return order


def get_split_order(session: Session, user: User, split_order_id: uuid.UUID) -> SplitOrder:
    """Load a split order for its patient or an admin; 404 for anyone else's."""
    split = session.get(SplitOrder, split_order_id)
    if split is None or not (
        user.role is Role.ADMIN or (user.role is Role.PATIENT and split.patient_id == user.id)
    ):
        raise _not_found()
    return split
