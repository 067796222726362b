"""The ABC rule as plain code: the classes a ranked list of sales values falls into.

A product is A while the products ranked above it make less than 80% of the store's sales value
(so the product that crosses 80% is A too), B while they make less than 95%, C after that; a
product that sold nothing is C. The SQL in `service.py` applies the same rule; this is the
reference its tests and readers check it against.
"""

from collections.abc import Sequence

A_SHARE_PCT = 80
B_SHARE_PCT = 95


def abc_class(before_minor: int, value_minor: int, total_minor: int) -> str:
    """Return the class of a product whose higher-ranked products sold `before_minor`."""
    if value_minor <= 0 or total_minor <= 0:
        return "C"
    if before_minor * 100 < total_minor * A_SHARE_PCT:
        return "A"
    if before_minor * 100 < total_minor * B_SHARE_PCT:
        return "B"
    return "C"


def classify(values: Sequence[tuple[int, int]]) -> dict[int, str]:
    """Return {product id: class} for (product id, sales value) pairs."""
    ranked = sorted(values, key=lambda pv: (-pv[1], pv[0]))
    total = sum(max(0, v) for _, v in ranked)
    before = 0
    classes = {}
    for product_id, value in ranked:
        classes[product_id] = abc_class(before, value, total)
        before += max(0, value)
    return classes
