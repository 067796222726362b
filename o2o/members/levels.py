"""Levels, benefits and points as plain rules over plain values (no database)."""

from dataclasses import dataclass

LEVELS = ("member", "silver", "gold", "platinum")
FREE_DELIVERY = "free_delivery"


@dataclass(frozen=True)
class Level:
    name: str
    from_spend_minor: int


@dataclass(frozen=True)
class Benefit:
    code: str
    description: str


def ladder(silver_minor: int, gold_minor: int, platinum_minor: int) -> tuple[Level, ...]:
    """Return the levels, lowest first, with the 12-month spend each starts at."""
    return (
        Level("member", 0),
        Level("silver", silver_minor),
        Level("gold", gold_minor),
        Level("platinum", platinum_minor),
    )


def level_for(spend_minor: int, levels: tuple[Level, ...]) -> Level:
    """Return the highest level the 12-month spend reaches."""
    reached = levels[0]
    for level in levels:
        if spend_minor >= level.from_spend_minor:
            reached = level
    return reached


def next_level(spend_minor: int, levels: tuple[Level, ...]) -> tuple[Level, int] | None:
    """Return the next level up and the spend still needed to reach it (None at the top)."""
    for level in levels:
        if spend_minor < level.from_spend_minor:
            return level, level.from_spend_minor - spend_minor
    return None


def has_free_delivery(level: str, free_delivery_level: str) -> bool:
    """Say whether a level's orders are delivered free."""
    if free_delivery_level not in LEVELS:
        return False
    return LEVELS.index(level) >= LEVELS.index(free_delivery_level)


def benefits(level: str, free_delivery_level: str) -> list[Benefit]:
    """Return what a level gives its members."""
    found = [Benefit("points", "Points on every completed order.")]
    if has_free_delivery(level, free_delivery_level):
        found.append(Benefit(FREE_DELIVERY, "Delivery is free on every order."))
    return found


def points_for(amount_minor: int, points_per_unit: int) -> int:
    """Return the points earned on an amount: per whole currency unit (100 minor), rounded down."""
    return max(0, amount_minor) * points_per_unit // 100
