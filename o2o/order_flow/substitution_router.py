"""Substitution API: a pharmacist substitutes an equivalent on a line; the patient answers."""

import uuid

from fastapi import APIRouter, status

from o2o.api import ApiRoute
from o2o.db import DbSession
from o2o.errors import error_responses
from o2o.order_flow import substitutions, views
from o2o.order_flow.router import ORDERS_PATH, StaffUser
from o2o.order_flow.schemas import OrderOut, SubstitutionIn, SubstitutionResultOut
from o2o.orders.models import Order
from o2o.users.dependencies import PatientUser
from prescriptions import service as prescriptions_service

router = APIRouter(route_class=ApiRoute, tags=["orders"])

SUBSTITUTIONS_PATH = ORDERS_PATH + "/{order_id}/substitutions"


@router.post(
    SUBSTITUTIONS_PATH,
    status_code=status.HTTP_201_CREATED,
    response_model=SubstitutionResultOut,
    responses=error_responses(
        e403="forbidden: only the store's staff substitute",
        e404="order_not_found",
        e409="order_not_substitutable, substitution_not_allowed (the prescription does not "
        "allow it), substitution_pending, product_already_in_order, insufficient_stock, "
        "payment_not_chargeable",
        e422=(
            "unknown_order_line",
            "unknown_product",
            "not_equivalent",
            "not_equivalent_quantity",
            "invalid_substitution_reason",
        ),
    ),
)
def substitute(order_id: uuid.UUID, body: SubstitutionIn, session: DbSession, staff: StaffUser):
    """Give an equivalent on a line of a released order: at once when the patient allowed
    equivalents for it (`substitution: allowed`), else held and asked of the patient."""
    sub = substitutions.propose(
        session,
        staff,
        order_id,
        product_id=body.product_id,
        to_product_id=body.to_product_id,
        reason=body.reason,
    )
    order = session.get(Order, order_id)
    session.refresh(order)
    return {
        "substitution": substitutions.view(sub),
        "order": views.present(session, order, staff),
        "safety": prescriptions_service.order_safety(
            session, order, adding=[] if sub.status == "accepted" else [sub.to_product_id]
        ),
    }


def _answer(session, order_id: uuid.UUID, patient) -> OrderOut:
    order = session.get(Order, order_id)
    session.refresh(order)
    return views.present(session, order, patient)


@router.post(
    SUBSTITUTIONS_PATH + "/{substitution_id}/accept",
    response_model=OrderOut,
    responses=error_responses(
        e403="forbidden: only the order's patient answers",
        e404="order_not_found, substitution_not_found",
        e409="substitution_not_pending, order_not_substitutable, payment_not_chargeable",
    ),
)
def accept_substitution(
    order_id: uuid.UUID, substitution_id: uuid.UUID, session: DbSession, patient: PatientUser
):
    """Accept the pharmacist's equivalent: it fills the line, the difference is charged or
    refunded."""
    substitutions.accept(session, patient, order_id, substitution_id)
    return _answer(session, order_id, patient)


@router.post(
    SUBSTITUTIONS_PATH + "/{substitution_id}/decline",
    response_model=OrderOut,
    responses=error_responses(
        e403="forbidden: only the order's patient answers",
        e404="order_not_found, substitution_not_found",
        e409="substitution_not_pending",
    ),
)
def decline_substitution(
    order_id: uuid.UUID, substitution_id: uuid.UUID, session: DbSession, patient: PatientUser
):
    """Decline the pharmacist's equivalent: the line stays as it was."""
    substitutions.decline(session, patient, order_id, substitution_id)
    return _answer(session, order_id, patient)
