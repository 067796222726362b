"""Pickup or delivery: the routing rule as a pure function over plain values (DESIGN.md, Routing).

Delivery is possible from a store that has every item, offers delivery, has the address inside its
zone, is open now, and whose ETA fits the SLA. `auto` takes the soonest such delivery, else pickup
at the nearest open store that has everything, and says why in words a patient understands. A
`delivery` request that cannot be met is refused with the reason and the nearest pickup instead,
never silently switched.
"""

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from o2o import i18n
from o2o.errors import Conflict
from o2o.i18n import gettext as _
from stores.allocation import InsufficientStock, Shortage


class Requested(enum.StrEnum):
    AUTO = "auto"
    PICKUP = "pickup"
    DELIVERY = "delivery"


@dataclass(frozen=True)
class StoreOption:
    """One store as seen for this cart from the patient (pickup) or the address (delivery)."""

    store_id: int
    name: str
    distance_m: float
    complete: bool
    is_open: bool
    offers_pickup: bool = True
    offers_delivery: bool = False
    # The address is inside the store's delivery zone (only meaningful for delivery options).
    in_zone: bool = False
    eta_minutes: int | None = None
    opens_at: datetime | None = None
    # Of eta_minutes, the wait for a courier around the store (the fleet's backlog).
    courier_wait_minutes: int = 0
    missing: tuple[Shortage, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Decision:
    fulfillment: str  # "pickup" | "delivery"
    store_id: int
    store_name: str
    reason: str
    eta_minutes: int | None = None


class DeliveryUnavailable(Conflict):
    code = "delivery_unavailable"


class StoreClosed(Conflict):
    code = "store_closed"


class PickupUnavailable(Conflict):
    code = "pickup_unavailable"


def distance_words(distance_m: float) -> str:
    """Say a distance the way a person would read it."""
    metres = max(10, round(distance_m / 10) * 10)
    if metres < 1000:
        return f"{metres} m"
    return f"{distance_m / 1000:.1f} km"


def time_words(at: datetime | None) -> str:
    """When a store opens, in the request's language (for an error message)."""
    return _("later") if at is None else i18n.wall_time(at)


def _reason_time(at: datetime | None) -> str:
    # Routing reasons are stored on the order and read by every later viewer: kept in English.
    return "later" if at is None else at.strftime("%a %H:%M")


def _store_ref(option: StoreOption) -> dict[str, Any]:
    return {"id": option.store_id, "name": option.name}


def can_deliver_in_time(option: StoreOption, sla_minutes: int) -> bool:
    """Say whether this store can deliver the whole cart to the address within the SLA now."""
    return (
        option.complete
        and option.offers_delivery
        and option.in_zone
        and option.is_open
        and option.eta_minutes is not None
        and option.eta_minutes <= sla_minutes
    )


def can_hand_over_now(option: StoreOption) -> bool:
    return option.complete and option.offers_pickup and option.is_open


def best_delivery(
    options: Sequence[StoreOption], sla_minutes: int
) -> tuple[StoreOption | None, str]:
    """Return the store that delivers soonest within the SLA, or None and why not."""
    eligible = [o for o in options if can_deliver_in_time(o, sla_minutes)]
    if eligible:
        return min(eligible, key=lambda o: (o.eta_minutes, o.distance_m, o.store_id)), ""
    covering = sorted(
        (o for o in options if o.complete and o.offers_delivery and o.in_zone),
        key=lambda o: o.distance_m,
    )
    closed = [o for o in covering if not o.is_open]
    slow = [o for o in covering if o.is_open]
    if slow:
        o = min(slow, key=lambda o: (o.eta_minutes or 10**6, o.distance_m))
        if o.eta_minutes is None:
            return None, f"{o.name} cannot estimate a delivery time to your address"
        if o.courier_wait_minutes and o.eta_minutes - o.courier_wait_minutes <= sla_minutes:
            return None, (
                f"our couriers near {o.name} are all busy right now, so delivery would take "
                f"about {o.eta_minutes} min, more than our {sla_minutes}-minute promise"
            )
        return None, (
            f"delivery from {o.name} would take about {o.eta_minutes} min, "
            f"more than our {sla_minutes}-minute promise"
        )
    if closed:
        o = closed[0]
        return None, f"{o.name}, which delivers to you, is closed until {_reason_time(o.opens_at)}"
    if any(o.complete for o in options):
        return None, "no pharmacy that has everything in your cart delivers to your address"
    return None, "no pharmacy near your address has everything in your cart"


def nearest_pickup(options: Sequence[StoreOption]) -> StoreOption | None:
    """Return the nearest open store that has everything and offers pickup."""
    eligible = [o for o in options if can_hand_over_now(o)]
    return min(eligible, key=lambda o: (o.distance_m, o.store_id)) if eligible else None


def _pickup_alternative(options: Sequence[StoreOption]) -> dict[str, Any] | None:
    o = nearest_pickup(options)
    if o is None:
        return None
    return {"store": _store_ref(o), "distance_m": round(o.distance_m, 1)}


def _no_pickup(
    options: Sequence[StoreOption], cart: Sequence[tuple[int, int]], store_chosen: bool
) -> Exception:
    """Explain why no store can hand the cart over now, as the error to raise."""
    closed = sorted(
        (o for o in options if o.complete and o.offers_pickup and not o.is_open),
        key=lambda o: (o.distance_m, o.store_id),
    )
    if closed:
        o = closed[0]
        return StoreClosed(
            _("{name} has everything in your cart but is closed; it opens {time_words}.").format(
                name=o.name, time_words=time_words(o.opens_at)
            ),
            details={
                "store": _store_ref(o),
                "opens_at": o.opens_at.isoformat() if o.opens_at else None,
            },
        )
    if any(o.complete for o in options):
        return PickupUnavailable(
            _("The pharmacies that have everything in your cart offer delivery only."),
            details={"stores": [_store_ref(o) for o in options if o.complete]},
        )
    if store_chosen:
        missing = options[0].missing if options else ()
        return InsufficientStock(
            missing or [Shortage(product_id, quantity) for product_id, quantity in cart],
            message=_("The pharmacy you chose does not have everything in your cart."),
        )
    # Report what the closest-to-complete store lacks: that is what the patient could change.
    partial = [o for o in options if o.missing]
    if partial:
        best = min(
            partial,
            key=lambda o: (sum(s.quantity_missing for s in o.missing), o.distance_m),
        )
        return InsufficientStock(
            best.missing,
            message=_(
                "No pharmacy near you has everything in your cart; {name} is the closest to it."
            ).format(name=best.name),
        )
    return InsufficientStock(
        [Shortage(product_id, quantity) for product_id, quantity in cart],
        message=_("No pharmacy near you has these items in stock."),
    )


def decide(
    requested: Requested | str,
    *,
    pickup_options: Sequence[StoreOption],
    delivery_options: Sequence[StoreOption] | None,
    sla_minutes: int,
    cart: Sequence[tuple[int, int]] = (),
    store_chosen: bool = False,
) -> Decision:
    """Choose pickup or delivery and the store, with the reason; raise a 409 saying why not.

    `delivery_options` is None when the patient gave no delivery address. With `store_chosen`,
    the options hold only the store the patient asked for.
    """
    requested = Requested(requested)
    why_no_delivery = "no delivery address was given"
    if requested is not Requested.PICKUP and delivery_options is not None:
        store, why_no_delivery = best_delivery(delivery_options, sla_minutes)
        if store is not None:
            return Decision(
                "delivery",
                store.store_id,
                store.name,
                f"Delivery from {store.name}: you are inside its delivery zone, "
                f"about {store.eta_minutes} min.",
                store.eta_minutes,
            )
    if requested is Requested.DELIVERY:
        if delivery_options is None:
            why_no_delivery = "a delivery needs a delivery address"
        raise DeliveryUnavailable(
            _("We cannot deliver this order: {why_no_delivery}.").format(
                why_no_delivery=why_no_delivery
            ),
            details={
                "reason": why_no_delivery,
                "pickup_alternative": _pickup_alternative(pickup_options),
            },
        )

    store = nearest_pickup(pickup_options)
    if store is None:
        raise _no_pickup(pickup_options, cart, store_chosen)
    where = f"Pickup at {store.name}, {distance_words(store.distance_m)} away"
    if requested is Requested.PICKUP:
        why = "the pharmacy you chose" if store_chosen else "the nearest with everything in stock"
        return Decision("pickup", store.store_id, store.name, f"{where}: {why}.")
    return Decision("pickup", store.store_id, store.name, f"{where}: {why_no_delivery}.")
