"""Split a cart no single store holds across the fewest nearby stores: pure code, no database.

The plan: the fewest stores (at most MAX_PARTS) whose usable stock together covers every line of
the cart. Among plans with as few stores, the nearest is the one with the smallest total distance
(the sum of each store's `distance_m` from the patient: the ground the patient, or the couriers,
cover in all); ties go to the smaller farthest store, then to the lower store ids. A line may be
split across stores when no store of the plan holds all of it. Within a plan each line is filled
from the nearest of its stores first, as much as that store holds, then from the next: so every
store of a fewest-store plan gets at least one item (were one to get none, the others would
cover the cart without it). Parts are listed nearest first.

`plan_split` finds the same plan as trying every set of up to MAX_PARTS stores
(tests/unit/test_split_plan.py checks it against that oracle): it walks stores nearest first,
stops extending a set once its total distance cannot beat the best plan found or the stores left
cannot make up what it lacks, and finds a set's last store as the lowest bit of an AND of bit
sets (the stores holding enough of each line still short), not by a scan.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_PARTS = 3


@dataclass(frozen=True)
class Candidate:
    """A store that may fill part of the cart: its distance and usable units per product."""

    store_id: int
    distance_m: float
    available: Mapping[int, int]


@dataclass(frozen=True)
class PlanPart:
    store_id: int
    distance_m: float
    items: tuple[tuple[int, int], ...]  # (product_id, quantity), in product order


@dataclass(frozen=True)
class Plan:
    parts: tuple[PlanPart, ...]  # nearest first

    @property
    def store_count(self) -> int:
        return len(self.parts)


def _by_distance(stores: Sequence[Candidate]) -> list[Candidate]:
    return sorted(stores, key=lambda c: (c.distance_m, c.store_id))


def plan_key(stores: Sequence[Candidate]) -> tuple:
    """Return the order of plans: fewer stores, then smaller total, then farthest, then ids."""
    ordered = _by_distance(stores)
    return (
        len(ordered),
        sum(c.distance_m for c in ordered),
        ordered[-1].distance_m if ordered else 0.0,
        tuple(sorted(c.store_id for c in ordered)),
    )


def covers(stores: Sequence[Candidate], cart: Mapping[int, int]) -> bool:
    """Say whether these stores together hold every line of the cart."""
    return all(
        sum(min(c.available.get(product_id, 0), quantity) for c in stores) >= quantity
        for product_id, quantity in cart.items()
    )


def assign(stores: Sequence[Candidate], cart: Mapping[int, int]) -> Plan:
    """Fill each line from the nearest store first; return the parts that got items."""
    remaining = dict(cart)
    parts = []
    for store in _by_distance(stores):
        items = []
        for product_id in sorted(remaining):
            take = min(remaining[product_id], store.available.get(product_id, 0))
            if take > 0:
                items.append((product_id, take))
                remaining[product_id] -= take
        remaining = {p: q for p, q in remaining.items() if q > 0}
        if items:
            parts.append(PlanPart(store.store_id, store.distance_m, tuple(items)))
    if remaining:
        raise ValueError("these stores do not cover the cart")
    return Plan(tuple(parts))


def plan_split(
    candidates: Sequence[Candidate], cart: Mapping[int, int], *, max_parts: int = MAX_PARTS
) -> Plan | None:
    """Return the fewest-store, nearest plan covering the cart, or None if none of max_parts."""
    if not cart or any(q <= 0 for q in cart.values()):
        raise ValueError("a cart has lines of positive quantities")
    need = list(cart.items())
    # Each store as its capped contribution per line, nearest first; stores that give nothing
    # are no use.
    useful = []
    for c in _by_distance(candidates):
        gives = tuple(min(c.available.get(p, 0), q) for p, q in need)
        if any(gives):
            useful.append((c, gives))
    wanted = tuple(q for _, q in need)
    n = len(useful)
    if any(sum(gives[line] for _, gives in useful) < w for line, w in enumerate(wanted)):
        return None  # not even every store together holds the cart
    # most[i][line]: the most any store from the i-th on gives of a line. A set with k places
    # left cannot be completed from there if some line lacks more than k times that.
    most = [tuple(0 for _ in need)] * (n + 1)
    for i in range(n - 1, -1, -1):
        most[i] = tuple(max(a, b) for a, b in zip(useful[i][1], most[i + 1], strict=True))

    # The stores giving at least `amount` of a line, as a bit set over `useful` (bit i: the
    # i-th nearest): the last store of a set is then the lowest bit of an AND, not a scan.
    holder_bits: dict[tuple[int, int], int] = {}

    def holders(line: int, amount: int) -> int:
        key = (line, amount)
        if key not in holder_bits:
            holder_bits[key] = sum(
                1 << i for i, (_, gives) in enumerate(useful) if gives[line] >= amount
            )
        return holder_bits[key]

    def nearest_completing(held: tuple, start: int) -> int | None:
        """Return the nearest store from `start` on that alone gives what `held` lacks."""
        bits = ((1 << n) - 1) & ~((1 << start) - 1)
        for line, (h, w) in enumerate(zip(held, wanted, strict=True)):
            if h < w:
                bits &= holders(line, w - h)
                if not bits:
                    return None
        return (bits & -bits).bit_length() - 1

    best: tuple | None = None
    best_set: list[Candidate] = []

    def consider(members: list[Candidate]) -> None:
        nonlocal best, best_set
        key = plan_key(members)
        if best is None or key < best:
            best, best_set = key, members

    def extend(start: int, chosen: list, held: tuple, distance: float, size: int) -> None:
        left = size - len(chosen)
        if any(w - h > left * m for h, w, m in zip(held, wanted, most[start], strict=True)):
            return  # the stores left cannot make up what is missing
        if left == 1:
            # Stores come nearest first (then by id): the lowest bit is the best last store.
            last = nearest_completing(held, start)
            if last is not None:
                consider([*chosen, useful[last][0]])
            return
        for i in range(start, n):
            store, gives = useful[i]
            # Stores come nearest first: each of the `left` still to add is at least this far.
            if best is not None and distance + left * store.distance_m > best[1]:
                return
            if all(g == 0 or h >= w for h, g, w in zip(held, gives, wanted, strict=True)):
                # Adds only to lines already held: the set without it is smaller and covers
                # the same, so it was tried (and failed, or we would have returned) before.
                continue
            now_held = tuple(h + g for h, g in zip(held, gives, strict=True))
            extend(i + 1, [*chosen, store], now_held, distance + store.distance_m, size)

    for size in range(1, max_parts + 1):
        extend(0, [], tuple(0 for _ in need), 0.0, size)
        if best is not None:
            return assign(best_set, cart)
    return None
