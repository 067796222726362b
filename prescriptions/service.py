"""Prescriptions (being written; see the prescriptions issue)."""

from sqlalchemy.orm import Session


def on_order_cancelled(session: Session, order) -> None:
    """Close the order's open prescription request, if any."""
    raise NotImplementedError("prescriptions are being built")


def mark_dispensed(session: Session, order) -> None:
    """Record that the order's prescription was dispensed (used once)."""
    raise NotImplementedError("prescriptions are being built")
