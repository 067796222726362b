"""Delivery slots: the scheduled windows a delivering store offers (today and tomorrow, within its
opening hours), each with a capacity, and booking one atomically.

A slot is `delivery_slot_minutes` of the store's wall clock, aligned on the local midnight, that
lies wholly inside the store's opening hours and starts at least SLOT_LEAD_MINUTES from now
(time to prepare and ride). Slots are computed, not stored; a `delivery_slots` row appears when a
slot is first booked and counts its orders. Booking is one conditional UPDATE
(`booked < capacity`), so concurrent bookings never overfill a slot; the last place goes to one
of them and the others are told it is full.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from o2o import clock
from o2o.config import get_settings
from o2o.errors import Conflict, InvalidInput
from o2o.geo import point_wkt
from o2o.i18n import gettext as _
from stores import eta, hours
from stores.models import DeliverySlot, Store

# A slot starts at least this long after it is booked: the store prepares, a courier rides.
SLOT_LEAD_MINUTES = 45
# A scheduled delivery's parcel is made this much earlier than preparation, the usual wait for a
# courier and the ride strictly need (preparation may run long; a courier may come early).
SLOT_PREPARATION_SLACK_MINUTES = 15


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime
    capacity: int
    left: int

    def as_dict(self) -> dict:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "capacity": self.capacity,
            "left": self.left,
        }


class SlotFull(Conflict):
    code = "delivery_slot_full"


def _windows(store: Store, now: datetime) -> list[tuple[datetime, datetime]]:
    """The windows the store could offer from now (capacity aside)."""
    settings = get_settings()
    zone = ZoneInfo(store.timezone)
    length = timedelta(minutes=settings.delivery_slot_minutes)
    earliest = now + timedelta(minutes=SLOT_LEAD_MINUTES)
    first_day = clock.today(zone, at=now)
    windows = []
    for offset in range(settings.delivery_slot_days):
        day = first_day + timedelta(days=offset)
        local = datetime(day.year, day.month, day.day)
        while local.date() == day:
            start = local.replace(tzinfo=zone).astimezone(UTC)
            end = (local + length).replace(tzinfo=zone).astimezone(UTC)
            local += length
            if start < earliest:
                continue
            if hours.is_open_at(store.opening_hours, store.timezone, start) and hours.is_open_at(
                store.opening_hours, store.timezone, end - timedelta(seconds=1)
            ):
                windows.append((start, end))
    return windows


def open_slots(session: Session, store: Store, *, now: datetime | None = None) -> list[Slot]:
    """List the store's delivery slots from now that still have room, earliest first."""
    now = now or clock.now()
    if not store.offers_delivery or not store.is_active:
        return []
    windows = _windows(store, now)
    if not windows:
        return []
    booked = dict(
        session.execute(
            select(DeliverySlot.starts_at, DeliverySlot.booked).where(
                DeliverySlot.store_id == store.id,
                DeliverySlot.starts_at >= windows[0][0],
                DeliverySlot.starts_at <= windows[-1][0],
            )
        ).all()
    )
    slots = []
    for start, end in windows:
        left = store.slot_capacity - booked.get(start, 0)
        if left > 0:
            slots.append(Slot(start, end, store.slot_capacity, left))
    return slots


def earliest_slot(session: Session, store: Store, *, now: datetime | None = None) -> Slot | None:
    """Return the store's earliest delivery slot with room, or None."""
    slots = open_slots(session, store, now=now)
    return slots[0] if slots else None


# A slot's row made on its first booking, as SQL text: every order placed for a slot books one,
# and SQLAlchemy compiles its PostgreSQL INSERT ... ON CONFLICT anew on every call.
_OPEN_SLOT = text(
    """
    INSERT INTO delivery_slots (store_id, starts_at, ends_at, capacity)
    VALUES (:store_id, :start, :end, :capacity)
    ON CONFLICT (store_id, starts_at) DO NOTHING
    """
)
_TAKE_PLACE = text(
    """
    UPDATE delivery_slots SET booked = booked + 1
    WHERE store_id = :store_id AND starts_at = :start AND booked < capacity
    RETURNING capacity, booked
    """
)


def book(
    session: Session, store: Store, start: datetime, end: datetime, *, now: datetime | None = None
) -> Slot:
    """Take one place in a slot: 422 if the store does not offer it, 409 when it is full."""
    now = now or clock.now()
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if (start, end) not in set(_windows(store, now)):
        raise InvalidInput(
            _("This pharmacy does not offer that delivery slot; list its slots and pick one."),
            code="invalid_delivery_slot",
            details={"start": start.isoformat(), "end": end.isoformat()},
        )
    session.execute(
        _OPEN_SLOT,
        {"store_id": store.id, "start": start, "end": end, "capacity": store.slot_capacity},
    )
    row = session.execute(_TAKE_PLACE, {"store_id": store.id, "start": start}).one_or_none()
    if row is None:
        later = earliest_slot(session, store, now=now)
        raise SlotFull(
            _("That delivery slot is full; please choose another."),
            details={"earliest_slot": later.as_dict() if later else None},
        )
    return Slot(start, end, row.capacity, row.capacity - row.booked)


def give_back(session: Session, store_id: int, start: datetime) -> None:
    """Free the place an order held in a slot (the order was cancelled)."""
    session.execute(
        text(
            "UPDATE delivery_slots SET booked = booked - 1 "
            "WHERE store_id = :store_id AND starts_at = :start AND booked > 0"
        ),
        {"store_id": store_id, "start": start},
    )


def courier_lead(session: Session, store_id: int, door: dict[str, float]) -> tuple[Store, float]:
    """Return the store and the minutes from a slot order's job entering the pool to its courier
    at the door (`door`: lat, lon): the usual wait for a courier, then the ride."""
    store, metres = session.execute(
        select(
            Store, func.ST_Distance(Store.location, func.ST_GeogFromText(point_wkt(**door)))
        ).where(Store.id == store_id)
    ).one()
    ride = eta.travel_minutes(float(metres or 0.0), store.detour_factor, store.courier_speed_kmh)
    return store, get_settings().sla_courier_wait_minutes + ride


def preparation_start(
    session: Session, store_id: int, slot_start: datetime, door: dict[str, float] | None
) -> datetime | None:
    """Return when the store should start on an order for a slot starting at `slot_start`, or
    None to start at once.

    In time for the slot, not at once: preparation and the courier's lead (`courier_lead`) before
    the slot starts, and a slack on top. So the store starts on a scheduled delivery when the
    fleet of that hour is known, and the promise check made as it starts (dispatch's
    `before_preparing`) can still tell the patient of a changed one. When the store is closed at
    that moment (a slot at opening time), the moment it opens for the slot.
    """
    if door is None:
        return None
    store, lead = courier_lead(session, store_id, door)
    start = slot_start - timedelta(
        minutes=store.prep_minutes + lead + SLOT_PREPARATION_SLACK_MINUTES
    )
    if hours.is_open_at(store.opening_hours, store.timezone, start):
        return start
    # Closed then (a slot at opening time): start as the store opens for the slot.
    opens = hours.next_opening(store.opening_hours, store.timezone, start)
    return opens if opens is not None and opens <= slot_start else None
