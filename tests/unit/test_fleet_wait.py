"""The queue model behind the fleet-aware promise: the wait for a courier around a store."""

import pytest

from dispatch.fleet import (
    JIT_SLACK_MINUTES,
    NO_COURIER_WAIT_MINUTES,
    Neighbourhood,
    courier_wait_minutes,
    preparation_hold_minutes,
)


def hood(ahead=0, couriers=10, idle=5, per_parcel=20.0, ride=6.0, arrivals=0.0) -> Neighbourhood:
    return Neighbourhood(ahead, couriers, idle, per_parcel, ride, arrivals_per_minute=arrivals)


def test_with_idle_couriers_around_the_wait_is_the_ride_to_the_store():
    assert courier_wait_minutes(hood(ahead=3, idle=5), prep_minutes=10) == 6.0


def test_with_no_courier_around_no_delivery_can_be_promised():
    assert courier_wait_minutes(hood(couriers=0, idle=0), prep_minutes=10) == (
        NO_COURIER_WAIT_MINUTES
    )


def test_a_backlog_is_cleared_at_the_fleets_rate_and_preparation_hides_part_of_it():
    # 40 jobs ahead, nobody idle, 10 couriers at 20 minutes a parcel: 41 / 0.5 = 82 minutes
    # until the new job is claimed, 10 of them spent preparing; then the ride.
    wait = courier_wait_minutes(hood(ahead=40, idle=0), prep_minutes=10)
    assert wait == 82 - 10 + 6


def test_the_wait_grows_with_the_backlog_and_shrinks_with_the_fleet():
    waits = [courier_wait_minutes(hood(ahead=n, idle=0), prep_minutes=10) for n in range(0, 80, 5)]
    assert waits == sorted(waits) and waits[-1] > waits[0]
    bigger = courier_wait_minutes(hood(ahead=40, couriers=20, idle=0), prep_minutes=10)
    assert bigger < courier_wait_minutes(hood(ahead=40, idle=0), prep_minutes=10)


def test_orders_arriving_no_faster_than_the_fleet_clears_them_add_nothing():
    # 10 couriers at 20 minutes a parcel clear 0.5 a minute; 0.5 arriving a minute is balanced.
    calm = courier_wait_minutes(hood(ahead=40, idle=0), prep_minutes=10)
    assert courier_wait_minutes(hood(ahead=40, idle=0, arrivals=0.5), prep_minutes=10) == calm


def test_beyond_the_fleets_rate_part_of_the_excess_is_served_first_and_the_wait_grows():
    # 0.75 a minute against 0.5 cleared: half of the excess 0.25 overtakes, so the queue ahead
    # moves at 3/4 of the fleet's rate: 41 / 0.5 / 0.75 = 109.3 minutes until the claim.
    wait = courier_wait_minutes(hood(ahead=40, idle=0, arrivals=0.75), prep_minutes=10)
    assert wait == pytest.approx(41 / 0.5 / 0.75 - 10 + 6)
    storm = courier_wait_minutes(hood(ahead=40, idle=0, arrivals=1.0), prep_minutes=10)
    assert storm > wait


def test_when_arrivals_would_take_the_whole_fleet_no_delivery_is_promised():
    # Twice the fleet's rate and more: the excess alone would take every courier.
    assert courier_wait_minutes(hood(ahead=3, idle=0, arrivals=1.5), prep_minutes=10) == (
        NO_COURIER_WAIT_MINUTES
    )


def test_a_store_holds_a_new_delivery_until_just_before_the_queue_reaches_it():
    # While orders outpace the fleet (0.75 a minute against 0.5): 41 / 0.5 / 0.75 minutes until
    # the claim, less 10 of preparation and JIT_SLACK_MINUTES of slack.
    hold = preparation_hold_minutes(hood(ahead=40, idle=0, arrivals=0.75), prep_minutes=10)
    assert hold == pytest.approx(41 / 0.5 / 0.75 - 10 - JIT_SLACK_MINUTES)
    # A fleet that keeps up with a backlog still starts at once.
    assert preparation_hold_minutes(hood(ahead=40, idle=0, arrivals=0.5), prep_minutes=10) == 0
    assert preparation_hold_minutes(hood(ahead=3, idle=5), prep_minutes=10) == 0.0
    # Without a courier at all there is nothing to wait for: start, the patient is told anyway.
    assert preparation_hold_minutes(hood(couriers=0, idle=0), prep_minutes=10) == 0.0


def test_a_store_whose_jobs_wait_long_promises_at_least_that_wait():
    # The neighbourhood looks calm (idle couriers), but the store's own jobs have lately waited
    # 50 minutes for a claim (few couriers may take them): a new one waits as long, then the ride.
    calm = hood(ahead=3, idle=5)
    assert courier_wait_minutes(calm, prep_minutes=10) == 6.0
    slighted = Neighbourhood(3, 10, 5, 20.0, 6.0, observed_claim_wait=50.0)
    assert courier_wait_minutes(slighted, prep_minutes=10) == 56.0
    # A short observed wait changes nothing the model already says.
    quick = Neighbourhood(40, 10, 0, 20.0, 6.0, observed_claim_wait=5.0)
    assert courier_wait_minutes(quick, prep_minutes=10) == courier_wait_minutes(
        hood(ahead=40, idle=0), prep_minutes=10
    )
