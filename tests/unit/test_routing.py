"""The pickup-or-delivery rule: plain values in, a decision with a reason out."""

from datetime import UTC, datetime

import pytest

from dispatch.routing import (
    DeliveryUnavailable,
    PickupUnavailable,
    StoreClosed,
    StoreOption,
    decide,
    distance_words,
)
from stores.allocation import InsufficientStock, Shortage

SLA = 120
OPENS = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def store(store_id=1, name="Store A", distance_m=800.0, **kw) -> StoreOption:
    values = dict(
        complete=True,
        is_open=True,
        offers_pickup=True,
        offers_delivery=True,
        in_zone=True,
        eta_minutes=45,
    )
    values.update(kw)
    return StoreOption(store_id=store_id, name=name, distance_m=distance_m, **values)


def test_auto_delivers_from_the_store_that_arrives_soonest_and_says_why():
    near_slow = store(1, "Near", 500, eta_minutes=100)
    far_fast = store(2, "Far", 2500, eta_minutes=40)
    d = decide(
        "auto", pickup_options=[near_slow], delivery_options=[near_slow, far_fast], sla_minutes=SLA
    )
    assert (d.fulfillment, d.store_id) == ("delivery", 2)
    assert d.reason == "Delivery from Far: you are inside its delivery zone, about 40 min."


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {"in_zone": False},
            "no pharmacy that has everything in your cart delivers to your address",
        ),
        ({"offers_delivery": False}, "no pharmacy that has everything"),
        ({"eta_minutes": 150}, "about 150 min, more than our 120-minute promise"),
        ({"is_open": False, "opens_at": OPENS}, "is closed until Tue 08:00"),
    ],
)
def test_auto_falls_back_to_pickup_at_the_nearest_store_and_says_why(change, why):
    deliverer = store(1, "Deliverer", 900, **change)
    pickup_near = store(2, "Corner", 300, offers_delivery=False, in_zone=False)
    pickup = [deliverer, pickup_near] if deliverer.is_open else [pickup_near]
    d = decide("auto", pickup_options=pickup, delivery_options=[deliverer], sla_minutes=SLA)
    assert (d.fulfillment, d.store_id) == ("pickup", 2)
    assert d.reason.startswith("Pickup at Corner, 300 m away: ")
    assert why in d.reason


def test_auto_without_an_address_is_a_pickup():
    d = decide("auto", pickup_options=[store()], delivery_options=None, sla_minutes=SLA)
    assert d.fulfillment == "pickup"
    assert "no delivery address was given" in d.reason


def test_eta_exactly_at_the_sla_still_delivers():
    d = decide(
        "delivery",
        pickup_options=[],
        delivery_options=[store(eta_minutes=SLA)],
        sla_minutes=SLA,
    )
    assert d.fulfillment == "delivery"


def test_a_delivery_that_cannot_be_met_is_refused_with_the_nearest_pickup_not_switched():
    slow = store(1, "Slow", 900, eta_minutes=200)
    corner = store(2, "Corner", 300, offers_delivery=False)
    with pytest.raises(DeliveryUnavailable) as info:
        decide("delivery", pickup_options=[slow, corner], delivery_options=[slow], sla_minutes=SLA)
    exc = info.value
    assert exc.status_code == 409 and exc.code == "delivery_unavailable"
    assert "200 min" in exc.details["reason"]
    assert exc.details["pickup_alternative"]["store"] == {"id": 2, "name": "Corner"}


def test_delivery_with_no_pickup_alternative_says_so():
    with pytest.raises(DeliveryUnavailable) as info:
        decide(
            "delivery",
            pickup_options=[],
            delivery_options=[store(in_zone=False)],
            sla_minutes=SLA,
        )
    assert info.value.details["pickup_alternative"] is None


def test_pickup_goes_to_the_nearest_open_complete_store():
    options = [
        store(1, "Closed", 100, is_open=False, opens_at=OPENS),
        store(2, "Partial", 200, complete=False, missing=(Shortage(7, 1),)),
        store(3, "No counter", 250, offers_pickup=False),
        store(4, "Right", 600),
        store(5, "Farther", 900),
    ]
    d = decide("pickup", pickup_options=options, delivery_options=None, sla_minutes=SLA)
    assert (d.fulfillment, d.store_id) == ("pickup", 4)
    assert d.reason == "Pickup at Right, 600 m away: the nearest with everything in stock."


def test_a_closed_store_is_not_offered_and_the_answer_says_when_it_opens():
    with pytest.raises(StoreClosed) as info:
        decide(
            "pickup",
            pickup_options=[store(is_open=False, opens_at=OPENS)],
            delivery_options=None,
            sla_minutes=SLA,
        )
    assert info.value.code == "store_closed"
    assert info.value.details["opens_at"] == OPENS.isoformat()
    assert "Tue 08:00" in info.value.message


def test_no_complete_store_reports_what_the_closest_to_complete_one_lacks():
    options = [
        store(1, "A", 100, complete=False, missing=(Shortage(7, 3), Shortage(8, 1))),
        store(2, "B", 900, complete=False, missing=(Shortage(8, 1),)),
    ]
    with pytest.raises(InsufficientStock) as info:
        decide("auto", pickup_options=options, delivery_options=options, sla_minutes=SLA)
    assert info.value.details == {"missing": [{"product_id": 8, "quantity_missing": 1}]}


def test_no_store_at_all_reports_the_whole_cart_missing():
    with pytest.raises(InsufficientStock) as info:
        decide("pickup", pickup_options=[], delivery_options=None, sla_minutes=SLA, cart=[(3, 2)])
    assert info.value.details == {"missing": [{"product_id": 3, "quantity_missing": 2}]}


def test_delivery_only_stores_cannot_serve_a_pickup():
    with pytest.raises(PickupUnavailable):
        decide(
            "pickup",
            pickup_options=[store(offers_pickup=False)],
            delivery_options=None,
            sla_minutes=SLA,
        )


def test_the_chosen_store_is_named_as_chosen():
    d = decide(
        "pickup",
        pickup_options=[store()],
        delivery_options=None,
        sla_minutes=SLA,
        store_chosen=True,
    )
    assert d.reason.endswith("the pharmacy you chose.")


@pytest.mark.parametrize(
    ("metres", "words"), [(4, "10 m"), (644, "640 m"), (999, "1.0 km"), (1250, "1.2 km")]
)
def test_distances_read_naturally(metres, words):
    assert distance_words(metres) == words
