"""Stores on both sides of UTC, and instants at which their local days are known.

Kiritimati (UTC+14) is already on tomorrow's date from 10:00 UTC, Pago Pago (UTC-11) still on
yesterday's until 11:00 UTC: whatever the hour, one of them is on another calendar day than UTC.
The local days below are written out by hand, not computed, so a test comparing with them does
not trust the code it checks.
"""

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

KIRITIMATI = "Pacific/Kiritimati"  # UTC+14
PAGO_PAGO = "Pacific/Pago_Pago"  # UTC-11
ZONES = [KIRITIMATI, PAGO_PAGO]

# (instant, local day in each zone at that instant)
INSTANTS = {
    # 10:30 UTC on 10 March: 00:30 on the 11th on Kiritimati, 23:30 on the 9th on Pago Pago.
    "both-off-utc": (
        datetime(2026, 3, 10, 10, 30, tzinfo=UTC),
        {KIRITIMATI: date(2026, 3, 11), PAGO_PAGO: date(2026, 3, 9)},
    ),
    # 11:30 UTC: 01:30 on the 11th on Kiritimati, 00:30 on the 10th on Pago Pago.
    "kiritimati-ahead": (
        datetime(2026, 3, 10, 11, 30, tzinfo=UTC),
        {KIRITIMATI: date(2026, 3, 11), PAGO_PAGO: date(2026, 3, 10)},
    ),
}

CASES = [(name, zone, at, days[zone]) for name, (at, days) in INSTANTS.items() for zone in ZONES]
CASE_IDS = [f"{name}-{zone.split('/')[1]}" for name, zone, _, _ in CASES]


def local_midnight(day: date, zone: str) -> datetime:
    """The instant a local day starts in `zone`, with that zone's UTC offset."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone))
