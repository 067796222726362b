"""A cart's checks: its lines and quantities within limits, and its products real, sold online and
within their per-order limits. Search and checkout both check a cart here before anything else."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from o2o.errors import InvalidInput
from o2o.i18n import gettext as _
from stores.models import Product

MAX_LINES = 50
MAX_QUANTITY = 1000


@dataclass(frozen=True)
class CartLine:
    product_id: int
    quantity: int


def merge_lines(lines: Iterable[Any]) -> list[CartLine]:
    """Add up lines of the same product, keeping the order each product first appeared in."""
    merged: dict[int, int] = {}
    for line in lines:
        merged[line.product_id] = merged.get(line.product_id, 0) + line.quantity
    return [CartLine(product_id, quantity) for product_id, quantity in merged.items()]


def check_lines(lines: Sequence[Any]) -> list[CartLine]:
    """Check line count and quantities; return the lines merged by product."""
    if not lines:
        raise InvalidInput(_("The cart is empty."), code="empty_cart")
    if len(lines) > MAX_LINES:
        raise InvalidInput(
            _("A cart has at most {MAX_LINES} lines.").format(MAX_LINES=MAX_LINES),
            code="too_many_lines",
            details={"max_lines": MAX_LINES, "lines": len(lines)},
        )
    for line in lines:
        if isinstance(line.quantity, bool) or not isinstance(line.quantity, int):
            raise InvalidInput(_("Quantities are whole numbers."), code="invalid_quantity")
        if not 1 <= line.quantity <= MAX_QUANTITY:
            raise InvalidInput(
                _("Each quantity must be from 1 to {MAX_QUANTITY}.").format(
                    MAX_QUANTITY=MAX_QUANTITY
                ),
                code="invalid_quantity",
                details={"product_id": line.product_id, "quantity": line.quantity},
            )
    merged = merge_lines(lines)
    for line in merged:
        if line.quantity > MAX_QUANTITY:
            raise InvalidInput(
                _("Each product's quantity must be at most {MAX_QUANTITY}.").format(
                    MAX_QUANTITY=MAX_QUANTITY
                ),
                code="invalid_quantity",
                details={"product_id": line.product_id, "quantity": line.quantity},
            )
    return merged


def check_products(merged: Sequence[CartLine], products: Mapping[int, Any]) -> None:
    """Refuse unknown and controlled products and quantities above a product's limit."""
    ids = [line.product_id for line in merged]
    unknown = [product_id for product_id in ids if product_id not in products]
    if unknown:
        raise InvalidInput(
            "Some products do not exist: " + ", ".join(map(str, unknown)) + ".",
            code="unknown_product",
            details={"product_ids": unknown},
        )
    controlled = [products[product_id] for product_id in ids if products[product_id].controlled]
    if controlled:
        names = ", ".join(p.name for p in controlled)
        raise InvalidInput(
            _("Controlled medicines are never sold online: {names}.").format(names=names),
            code="controlled_product",
            details={"product_ids": [p.id for p in controlled]},
        )
    over = [
        (products[line.product_id], line.quantity)
        for line in merged
        if products[line.product_id].max_per_order is not None
        and line.quantity > products[line.product_id].max_per_order
    ]
    if over:
        raise InvalidInput(
            " ".join(
                f"At most {p.max_per_order} of {p.name} per order (asked {quantity})."
                for p, quantity in over
            ),
            code="max_per_order_exceeded",
            details={
                "products": [
                    {
                        "product_id": p.id,
                        "name": p.name,
                        "max_per_order": p.max_per_order,
                        "quantity": quantity,
                    }
                    for p, quantity in over
                ]
            },
        )


# A cart's products, built once: every placement reads them.
_PRODUCTS = select(Product).where(Product.id.in_(bindparam("ids", expanding=True)))


def validate_cart(
    session: Session,
    lines: Sequence[Any],
    *,
    read: Select[Any] = _PRODUCTS,
    params: Mapping[str, Any] | None = None,
) -> dict[int, Product]:
    """Check a cart (merging lines of one product); return its products by id, or raise 422.
    `read` is the statement that reads them (by `ids`, with `params`; the product its first
    column): `_PRODUCTS`, or one that does more in the same statement (a placement takes its
    patient's lock with it)."""
    merged = check_lines(lines)
    products = session.scalars(
        read, {"ids": [line.product_id for line in merged], **(params or {})}
    )
    by_id = {product.id: product for product in products}
    check_products(merged, by_id)
    return by_id
