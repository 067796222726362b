"""The hot reads' answers (`o2o.api.data_json`) are the documents pydantic's serializer would
write for the same data, the serializer every other answer goes through: the same datetimes (ISO
8601, `Z` for UTC, offsets otherwise), enums by value, and the same numbers and text."""

import enum
import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import example, given
from hypothesis import strategies as st
from pydantic_core import to_json

from o2o.api import data_json


class Service(enum.StrEnum):
    PICKUP = "pickup"
    DELIVERY = "delivery"


class Level(enum.Enum):
    GOLD = "gold"


ZONES = [UTC, ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/London"), ZoneInfo("America/New_York"),
         timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-3))]  # fmt: skip
MOMENTS = st.builds(
    lambda naive, zone: naive.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)),
    st.sampled_from(ZONES),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    MOMENTS,
    st.dates(),
    st.sampled_from([Service.PICKUP, Service.DELIVERY, Level.GOLD]),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.timedeltas(),
)
KEYS = st.one_of(st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1))
DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=30,
)


def _read(raw: bytes):
    return json.loads(raw)


@given(DATA)
@example({"opens_at": datetime(2026, 12, 6, 1, 0, 0, 120000, tzinfo=UTC)})
@example({"opens_at": datetime(2026, 12, 6, 1, 0, tzinfo=ZoneInfo("Europe/London"))})
@example([date(2026, 1, 2), Service.DELIVERY, 1e16, "药房\u2028<&>", Decimal("1.50"), {7: "id"}])
def test_an_answer_is_the_document_pydantic_would_write(data):
    assert _read(data_json(data).body) == _read(to_json(data))


def test_a_negative_zero_keeps_its_sign():
    (written,) = _read(data_json([-0.0]).body)
    assert written == 0 and math.copysign(1, written) == -1


def test_a_store_opening_later_today_reads_as_the_models_write_it():
    opens = datetime(2026, 12, 6, 0, 30, tzinfo=UTC)
    answer = data_json({"opens_at": opens, "services": [Service.PICKUP]})
    assert answer.body == b'{"opens_at":"2026-12-06T00:30:00Z","services":["pickup"]}'
    assert answer.media_type == "application/json"
