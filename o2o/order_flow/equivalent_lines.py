"""The lines an order gives: each asked line, or the equivalent the search chose for it."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from stores.models import Product


@dataclass(frozen=True)
class GivenLine:
    """A line as the order fills it: the product given and, when it is a stand-in, the asked."""

    product_id: int
    quantity: int
    requested_product_id: int | None = None

    @property
    def asked_id(self) -> int:
        return self.requested_product_id or self.product_id


def given(cart: Sequence[tuple[int, int]], stand_ins: Mapping[int, dict]) -> list[GivenLine]:
    """Return the cart's lines with each stand-in ({"product_id", "quantity"}) in place."""
    lines = []
    for product_id, quantity in cart:
        s = stand_ins.get(product_id)
        if s is None:
            lines.append(GivenLine(product_id, quantity))
        else:
            lines.append(GivenLine(int(s["product_id"]), int(s["quantity"]), product_id))
    return lines


_PRODUCTS = select(Product).where(Product.id.in_(bindparam("ids", expanding=True)))


def products_of(
    session: Session, lines: Sequence[GivenLine], known: Mapping[int, Product]
) -> dict[int, Product]:
    """Return the given products not among `known`, by id."""
    missing = [line.product_id for line in lines if line.product_id not in known]
    if not missing:
        return {}
    return {p.id: p for p in session.scalars(_PRODUCTS, {"ids": missing})}
