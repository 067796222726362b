"""The batching rule: which open jobs of one store a courier takes together, in which order."""

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch import batching
from dispatch.batching import Drop, Rules
from stores.eta import travel_minutes

STORE = (31.2304, 121.4737)
NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
RULES = Rules(max_parcels=3, max_detour_minutes=20, handover_minutes=2)
METRES_PER_DEG = 111_195.0


def ride(metres: float) -> float:
    return travel_minutes(metres, 1.35, 18)


def at(north_m: float, east_m: float = 0.0) -> tuple[float, float]:
    return (STORE[0] + north_m / METRES_PER_DEG, STORE[1] + east_m / (METRES_PER_DEG * 0.855))


def drop(north_m: float, east_m: float = 0.0, *, due_in: float = 100) -> Drop:
    return Drop(uuid.uuid4(), at(north_m, east_m), NOW + timedelta(minutes=due_in))


def plan(anchor: Drop, candidates: list[Drop], rules: Rules = RULES):
    return batching.plan_trip(
        anchor, candidates, store=STORE, leaves_store=NOW, travel_minutes=ride, rules=rules
    )


def test_alone_the_anchor_is_the_whole_trip_with_its_door_time():
    anchor = drop(2000)
    (only,) = plan(anchor, [])
    assert only.job_id == anchor.job_id and only.seq == 1
    assert only.eta == NOW + timedelta(minutes=ride(batching.distance_m(STORE, anchor.dropoff)))


def test_drops_along_the_way_join_in_the_order_a_courier_rides_them():
    anchor = drop(3000)
    near, middle = drop(1000, 50), drop(2000, -50)
    trip = plan(anchor, [middle, near])
    assert [d.job_id for d in trip] == [near.job_id, middle.job_id, anchor.job_id]
    assert [d.seq for d in trip] == [1, 2, 3]
    assert trip[0].eta < trip[1].eta < trip[2].eta


def test_never_more_parcels_than_the_limit():
    anchor = drop(3000)
    others = [drop(500 * i, 20 * i) for i in range(1, 6)]
    assert len(plan(anchor, others)) == 3
    assert len(plan(anchor, others, Rules(2, 20, 2))) == 2
    assert len(plan(anchor, others, Rules(1, 20, 2))) == 1


def test_a_drop_the_other_way_is_a_detour_too_long_to_take():
    anchor = drop(3000)
    opposite = drop(-3000)
    assert [d.job_id for d in plan(anchor, [opposite])] == [anchor.job_id]
    # Allowed a long enough detour, it comes along.
    assert len(plan(anchor, [opposite], Rules(3, 60, 2))) == 2


def test_a_batch_mate_never_makes_a_drop_late():
    anchor = drop(3000, due_in=ride(3000) + 3)  # on time alone, with 3 minutes to spare
    # Off the line, and due soon: it would have to go first, which makes the anchor late
    # (a longer way plus a hand-over); after the anchor it would be late itself.
    off_the_line = drop(1500, 900)
    off_the_line = batching.Drop(
        off_the_line.job_id,
        off_the_line.dropoff,
        NOW + timedelta(minutes=ride(batching.distance_m(STORE, off_the_line.dropoff)) + 1),
    )
    trip = plan(anchor, [off_the_line])
    assert [d.job_id for d in trip] == [anchor.job_id]
    # With time to spare the anchor takes it along.
    roomy = batching.Drop(anchor.job_id, anchor.dropoff, anchor.deadline + timedelta(minutes=10))
    assert len(plan(roomy, [off_the_line])) == 2


def test_a_batch_mate_keeps_the_margin_before_its_deadline():
    # The SLA monitor calls a drop due within its margin (15 minutes) of its deadline at risk:
    # a batch does not take along one it would bring that close, nor bring the anchor that close.
    anchor = drop(3000)
    on_the_way = drop(1500, 50)
    due = batching.door_times(NOW, STORE, [on_the_way], ride, 2)[0]
    tight = Drop(on_the_way.job_id, on_the_way.dropoff, due + timedelta(minutes=10))
    margin = Rules(3, 20, 2, deadline_margin_minutes=15)
    assert len(plan(anchor, [tight])) == 2  # on time without a margin
    assert [d.job_id for d in plan(anchor, [tight], margin)] == [anchor.job_id]
    roomy = Drop(on_the_way.job_id, on_the_way.dropoff, due + timedelta(minutes=16))
    assert len(plan(anchor, [roomy], margin)) == 2
    # The anchor, 15 minutes to spare alone: a mate due soon, which would have to go first and
    # cost it two of them, stays behind.
    alone = batching.door_times(NOW, STORE, [anchor], ride, 2)[0]
    snug = Drop(anchor.job_id, anchor.dropoff, alone + timedelta(minutes=15))
    first = drop(1500, 300)
    first = Drop(
        first.job_id,
        first.dropoff,
        batching.door_times(NOW, STORE, [first], ride, 2)[0] + timedelta(minutes=20),
    )
    assert [d.job_id for d in plan(snug, [first], margin)] == [anchor.job_id]
    assert [d.job_id for d in plan(snug, [first])] == [first.job_id, anchor.job_id]


def test_a_candidate_that_would_itself_be_late_is_left():
    anchor = drop(1000)
    late = drop(2000, due_in=1)
    assert [d.job_id for d in plan(anchor, [late])] == [anchor.job_id]


def test_an_anchor_late_even_alone_may_still_carry_others_that_are_on_time():
    anchor = drop(2000, due_in=-5)
    mate = drop(2100, 30)
    trip = plan(anchor, [mate])
    assert {d.job_id for d in trip} == {anchor.job_id, mate.job_id}


points = st.tuples(st.floats(-4000, 4000), st.floats(-4000, 4000))


@settings(max_examples=60, deadline=None)
@given(
    anchor=points,
    others=st.lists(st.tuples(points, st.floats(-30, 200)), max_size=8),
    parcels=st.integers(1, 4),
    detour=st.floats(0, 40),
    margin=st.sampled_from([0.0, 15.0]),
)
def test_every_trip_keeps_the_rules(anchor, others, parcels, detour, margin):
    rules = Rules(parcels, detour, 2, margin)
    a = drop(*anchor, due_in=500)
    candidates = [drop(*p, due_in=due) for p, due in others]
    trip = plan(a, candidates, rules)
    by_id = {d.job_id: d for d in [a, *candidates]}
    assert trip[0].seq == 1 and [d.seq for d in trip] == list(range(1, len(trip) + 1))
    assert a.job_id in {d.job_id for d in trip}
    assert len(trip) <= parcels and len({d.job_id for d in trip}) == len(trip)
    for d in trip:
        # every drop on time with the margin (the anchor, due in 500 minutes, has it alone)
        assert d.eta <= by_id[d.job_id].deadline - timedelta(minutes=margin)
    alone = NOW + timedelta(minutes=ride(batching.distance_m(STORE, a.dropoff)))
    anchor_eta = next(d.eta for d in trip if d.job_id == a.job_id)
    assert anchor_eta - alone <= timedelta(minutes=detour) + timedelta(microseconds=1)
