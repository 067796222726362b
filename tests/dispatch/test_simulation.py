"""The simulated day: a few orders through the real services, under both dispatch policies."""

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from o2o import clock
from o2o.simulation import cli, day, run

# A quarter of an hour of demand near the couriers' home stores: every order is claimed at once
# and the day drains in about an hour of simulated time (seconds of wall time), with two orders
# on prescription.
SMALL = day.Options(seed=1, orders=5, couriers=3, hours=0.25, rx_share=0.35)


def test_the_plan_is_the_same_for_the_same_seed():
    start = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    first = day.plan_day(SMALL, start=start)
    assert first == day.plan_day(SMALL, start=start)
    assert first != day.plan_day(replace(SMALL, seed=SMALL.seed + 1), start=start)
    assert len(first.orders) == SMALL.orders and len(first.couriers) == SMALL.couriers
    assert all(start <= o.at < start + timedelta(hours=SMALL.hours) for o in first.orders)
    assert [o.at for o in first.orders] == sorted(o.at for o in first.orders)


@pytest.mark.slow
def test_a_small_day_delivers_every_order_under_both_policies(committed):
    ranked, baseline = run.simulate(SMALL, progress=False)

    assert (ranked.policy, baseline.policy) == tuple(run.POLICIES)
    for result in (ranked, baseline):
        # The same demand in both runs, and every order that was placed reached its door.
        assert (result.placed, result.refused, result.rx_orders) == (
            ranked.placed,
            ranked.refused,
            ranked.rx_orders,
        )
        assert result.placed >= 4
        assert result.undelivered == 0
        assert result.stats["delivered"] == result.placed - result.rx_rejected
        assert 0 <= result.stats["on_time_rate"] <= 1
        assert 0 < result.stats["p50_minutes"] <= result.stats["p95_minutes"]
        assert result.claims >= result.stats["delivered"]
    assert ranked.rx_orders >= 1  # a doctor signed and a pharmacist approved through the services
    # The simulated clock is gone once the day is over: the platform's clock reads real time
    # again (time.time() is the wall clock itself, the one thing this check compares with).
    assert abs(clock.now().timestamp() - time.time()) < 5


def test_the_command_refuses_a_database_it_would_empty():
    result = CliRunner().invoke(cli.app, ["--orders", "1"])
    assert result.exit_code == 2
    assert "_sim" in result.output
