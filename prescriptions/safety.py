"""The pharmacist's safety checks for an order: the patient's coded allergies, and interactions
between what the order holds and what the patient takes (their other open orders and what was
dispensed to them lately), from the interaction table the chain loads.

The decision is pure (`prescriptions.substances.warnings`); this module reads its inputs.
"""

import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import and_, delete, or_, select, tuple_
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.orders import states
from o2o.orders.models import Order, OrderLine, OrderStatus
from o2o.users.models import User
from prescriptions import substances
from prescriptions.models import DrugInteraction, PatientAllergy
from stores.models import Product

# --- allergies ---------------------------------------------------------------------------------


def allergies_of(session: Session, patient_id: int) -> list[substances.Allergy]:
    """The patient's recorded allergies, by substance code."""
    rows = session.scalars(
        select(PatientAllergy)
        .where(PatientAllergy.patient_id == patient_id)
        .order_by(PatientAllergy.substance_code)
    )
    return [substances.Allergy(r.substance_code, r.display, r.reaction) for r in rows]


def set_allergies(
    session: Session, patient_id: int, allergies: Sequence[substances.Allergy]
) -> list[substances.Allergy]:
    """Replace the patient's allergies with this list (empty: no known allergies)."""
    # Two replacements for one patient queue on the user row, so the second deletes what the
    # first wrote instead of colliding with it.
    session.execute(select(User.id).where(User.id == patient_id).with_for_update())
    session.execute(delete(PatientAllergy).where(PatientAllergy.patient_id == patient_id))
    at = clock.now()
    for a in allergies:
        session.add(
            PatientAllergy(
                patient_id=patient_id,
                substance_code=a.code,
                display=a.display,
                reaction=a.reaction,
                recorded_at=at,
            )
        )
    session.flush()
    return allergies_of(session, patient_id)


def allergy_view(allergies: Sequence[substances.Allergy]) -> list[dict]:
    """The allergies as the API shows them."""
    return [
        {"code": a.code, "system": substances.SYSTEM, "display": a.display, "reaction": a.reaction}
        for a in allergies
    ]


# --- the medicines in play ---------------------------------------------------------------------


def _medicines(rows, source: str) -> list[substances.Medicine]:
    return [
        substances.Medicine(
            product_id=product_id,
            name=name,
            substances=substances.substances_of(generic),
            source=source,
            order_id=str(order_id),
            at=completed_at.isoformat() if completed_at else None,
        )
        for product_id, name, generic, order_id, completed_at in rows
    ]


def _lines_query():
    return (
        select(
            OrderLine.product_id, Product.name, Product.generic_name, Order.id, Order.completed_at
        )
        .join(Order, Order.id == OrderLine.order_id)
        .join(Product, Product.id == OrderLine.product_id)
    )


def medicines_in_play(
    session: Session, order_id: uuid.UUID, patient_id: int
) -> tuple[list[substances.Medicine], list[substances.Medicine]]:
    """(what the order holds, what the patient takes besides: other open orders and what was
    dispensed within the look-back window)."""
    ordered = _medicines(
        session.execute(_lines_query().where(Order.id == order_id).order_by(OrderLine.id)).all(),
        "this_order",
    )
    since = clock.now() - timedelta(days=get_settings().interaction_lookback_days)
    others = session.execute(
        _lines_query()
        .where(
            Order.patient_id == patient_id,
            Order.id != order_id,
            or_(
                Order.status.in_(states.OPEN_STATES),
                and_(Order.status == OrderStatus.COMPLETED, Order.completed_at >= since),
            ),
        )
        .order_by(Order.created_at.desc(), OrderLine.id)
    ).all()
    current = _medicines([r for r in others if r.completed_at is None], "open_order")
    current += _medicines([r for r in others if r.completed_at is not None], "dispensed")
    return ordered, current


def interactions_among(
    session: Session, pairs: set[tuple[str, str]]
) -> list[substances.Interaction]:
    """The rows of the interaction table for these pairs (one indexed lookup)."""
    if not pairs:
        return []
    rows = session.scalars(
        select(DrugInteraction).where(
            tuple_(DrugInteraction.substance_a, DrugInteraction.substance_b).in_(sorted(pairs))
        )
    )
    return [
        substances.Interaction(r.substance_a, r.substance_b, r.severity, r.advice) for r in rows
    ]


def order_warnings(
    session: Session, order_id: uuid.UUID, patient_id: int, *, adding: Sequence[int] = ()
) -> dict:
    """The patient's allergies and the allergy and interaction warnings for the order (with the
    products `adding` counted in it: an equivalent a pharmacist proposes)."""
    ordered, current = medicines_in_play(session, order_id, patient_id)
    if adding:
        rows = session.execute(
            select(Product.id, Product.name, Product.generic_name).where(
                Product.id.in_(list(adding))
            )
        ).all()
        ordered += _medicines(
            [(pid, name, generic, order_id, None) for pid, name, generic in rows], "this_order"
        )
    allergies = allergies_of(session, patient_id)
    table = interactions_among(session, substances.pairs_to_check(ordered, current))
    return {
        "allergies": allergy_view(allergies),
        "warnings": substances.warnings(ordered, current, allergies, table),
    }


def known_substances(session: Session) -> set[str]:
    """Every substance code the catalogue's generic names and the interaction table give."""
    names = session.scalars(select(Product.generic_name).distinct())
    codes = {code for name in names for code in substances.substances_of(name)}
    for a, b in session.execute(select(DrugInteraction.substance_a, DrugInteraction.substance_b)):
        codes.update((a, b))
    return codes


def search_substances(session: Session, q: str | None, *, limit: int) -> list[dict]:
    """Known substance codes containing `q` (normalised), alphabetical."""
    needle = substances.normalize(q) if q else ""
    codes = sorted(code for code in known_substances(session) if needle in code)[:limit]
    return [
        {"code": c, "system": substances.SYSTEM, "display": substances.display_name(c)}
        for c in codes
    ]
