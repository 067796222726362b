"""Equivalent medicines: products with the same generic name, strength, dosage form and route.

The key is a generated column of `products` (`stores.models.EQUIVALENCE_KEY_SQL`), so every way
a product enters the catalogue carries it. Pack sizes may differ: a line of 2 packs of 12 tablets
is covered by 1 pack of 24, never by a quantity that does not give the same number of units.
"""

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from o2o.errors import NotFound
from stores.models import Product

# The route a dosage form implies when the catalogue does not say: the first group with a word of
# the form (whole words: "soft gelatin capsules" are oral, "gel" is topical). Migration 0018
# applies the same table to the products that existed before it.
_ROUTES = (
    (("eye", "eyes", "ophthalmic"), "ophthalmic"),
    (("ear", "ears", "otic"), "otic"),
    (("nasal", "nose"), "nasal"),
    (("inhaler", "inhalers", "inhalation"), "inhalation"),
    (("injection", "injections", "injectable", "pen", "pens", "vial", "vials"), "parenteral"),
    (("suppository", "suppositories", "rectal"), "rectal"),
    (("patch", "patches", "transdermal"), "transdermal"),
    (
        ("gel", "gels", "cream", "creams", "ointment", "ointments", "lotion", "lotions", "topical"),
        "topical",
    ),
)


def default_route(dosage_form: str) -> str:
    """Return the route a dosage form implies ("oral" unless a word of the form names another)."""
    words = set(re.findall(r"[a-z]+", dosage_form.lower()))
    for names, route in _ROUTES:
        if words.intersection(names):
            return route
    return "oral"


def substitute_quantity(quantity: int, pack_from: int, pack_to: int) -> int | None:
    """Return how many packs of `pack_to` give the units of `quantity` packs of `pack_from`,
    or None when no whole number of packs does."""
    units = quantity * pack_from
    if pack_to <= 0 or units % pack_to:
        return None
    return units // pack_to


def equivalents_of(session: Session, product_id: int) -> list[Product]:
    """List the other products equivalent to a product (404 product_not_found)."""
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound("No such product.", code="product_not_found")
    return alternatives(session, [product_id]).get(product_id, [])


def alternatives(session: Session, product_ids: Iterable[int]) -> dict[int, list[Product]]:
    """Return, for each product, the other products sharing its key that may be sold online
    (controlled ones never are), by name then id; products without any are left out."""
    ids = sorted(set(product_ids))
    if not ids:
        return {}
    other = aliased(Product)
    rows = session.execute(
        select(Product.id, other)
        .join(other, other.equivalence_key == Product.equivalence_key)
        .where(Product.id.in_(ids), other.id != Product.id, ~other.controlled)
        .order_by(Product.id, other.name, other.id)
    ).all()
    found: dict[int, list[Product]] = {}
    for product_id, equivalent in rows:
        found.setdefault(product_id, []).append(equivalent)
    return found


def are_equivalent(a: Product, b: Product) -> bool:
    """Tell whether two distinct products may stand in for each other."""
    return a.id != b.id and a.equivalence_key is not None and a.equivalence_key == b.equivalence_key
