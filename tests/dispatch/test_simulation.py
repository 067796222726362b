"""The simulated day: a few orders through the real services, under both dispatch policies."""

import io
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console
from sqlalchemy import text
from typer.testing import CliRunner

from o2o import clock
from o2o.simulation import cli, day, measure, report, run
from tests.dispatch import helpers

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
def test_a_small_day_delivers_every_order_under_every_policy(committed):
    told: list[tuple[str, int]] = []
    results = run.simulate(
        SMALL, on_progress=lambda policy, minutes: told.append((policy, minutes))
    )

    assert tuple(r.policy for r in results) == tuple(run.POLICIES) == ("fifo", "ranked", "platform")
    # Progress: each policy's simulated minutes, one by one, at least the whole day's.
    for policy in run.POLICIES:
        minutes = [m for p, m in told if p == policy]
        assert minutes == list(range(1, len(minutes) + 1)) and len(minutes) >= 15
    first = results[0]
    for result in results:
        # The same demand in every run, and every order that was placed reached its door.
        assert result.asked_delivery == first.asked_delivery == SMALL.orders
        assert result.rx_orders >= 1
        assert result.placed >= 4
        assert result.undelivered == 0
        delivered = result.line["delivered"]
        assert delivered + result.collected == result.placed - result.rx_rejected
        assert 0 <= result.line["on_time_rate"] <= 1
        assert 0 < result.line["p50"] <= result.line["p95"]
        assert result.claims >= delivered
        # Where the minutes went, stage by stage: every stage of a delivery took some time
        # (preparation and the rides always take minutes; the waits may be nil).
        stages = result.line["stages"]
        assert list(stages) == [label for label, _, _ in measure.STAGES]
        assert all(minutes >= 0 for minutes in stages.values())
        assert stages["preparation"] > 0 and stages["pickup to the door"] > 0
        line = report.policy_line(result)
        assert re.fullmatch(
            rf"policy {result.policy}: on-time \d+\.\d% p50 \d+\.\d min p95 \d+\.\d min "
            rf"delivered {delivered} diverted \d+ per-courier-hour \d+\.\d\d",
            line,
        ), line
    shown = io.StringIO()
    Console(file=shown, width=160).print(report.results_table(SMALL, results))
    for label, _, _ in measure.STAGES:
        assert f"median minutes: {label}" in shown.getvalue()
    # One order a trip for fifo and ranked; the platform may batch.
    assert results[0].line["mean_batch"] == results[1].line["mean_batch"] == 1.0
    assert results[2].line["mean_batch"] >= 1.0
    # The simulated clock is gone once the day is over: the platform's clock reads real time
    # again (time.time() is the wall clock itself, the one thing this check compares with).
    assert abs(clock.now().timestamp() - time.time()) < 5


@pytest.mark.slow
def test_a_doctor_who_holds_the_most_requests_they_may_leaves_the_next_to_another(committed):
    # Twenty prescriptions within three minutes for two doctors, who may each hold five
    # requests at once: the requests wait for a free doctor, and every one is issued.
    rush = day.Options(seed=4, orders=20, couriers=6, hours=0.05, rx_share=1.0, doctors=2)
    (result,) = run.simulate(rush, policies=("platform",))

    assert result.rx_orders == result.placed == 20
    assert result.undelivered == 0
    assert result.line["delivered"] + result.collected == result.placed - result.rx_rejected


def test_the_storm_is_the_peak_with_an_evening_surge_and_couriers_going_off_shift():
    start = day.day_start(datetime(2026, 11, 20).date(), hour=11)
    peak = day.plan_day(day.SCENARIOS["peak"], start=start)
    storm = day.plan_day(day.SCENARIOS["storm"], start=start)
    assert len(peak.orders) == 1200 and len(storm.orders) > 1300
    evening = [o for o in storm.orders if o.at.astimezone(day.LOCAL).hour >= 17]
    assert len(evening) > 1.3 * len(
        [o for o in peak.orders if o.at.astimezone(day.LOCAL).hour >= 17]
    )
    off = [c for c in storm.couriers if c.off_at is not None]
    assert len(off) == 10 and all(c.off_at.astimezone(day.LOCAL).hour == 18 for c in off)
    assert all(c.off_at is None for c in peak.couriers)


def test_the_command_refuses_a_database_it_would_empty():
    result = CliRunner().invoke(cli.app, ["--orders", "1"])
    assert result.exit_code == 2
    assert "_sim" in result.output


def test_progress_without_a_terminal_is_a_line_per_policy_each_simulated_hour():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    with cli.policy_progress(console, ("fifo", "platform"), 150) as on_progress:
        for minute in range(1, 200):
            on_progress("fifo", minute)
        on_progress("platform", 59)
    assert out.getvalue().splitlines() == [
        "      fifo: 60/150 simulated minutes",
        "      fifo: 120/150 simulated minutes",
        "      fifo: 150/150 simulated minutes",
    ]


def test_a_parcel_brought_back_from_an_unanswered_door_is_silent_unless_told_as_it_came_back(
    db, store
):
    # Three deliveries started at once, taken to a door nobody answered, delivered late on the
    # second trip. Told of the new promise as the parcel came back, in time: not broken silently.
    # Not told: silent. Brought back only after the deadline: silent whatever was said then.
    now = clock.now()

    def late(*, failed_before_deadline: timedelta, told: bool) -> None:
        order = helpers.make_delivery_order(db, store, released_at=now - timedelta(hours=3))
        failed_at = order.sla_deadline - failed_before_deadline
        at = {"id": order.id, "started": order.released_at + timedelta(minutes=2)}
        db.execute(
            text(
                "INSERT INTO order_events (order_id, from_status, to_status, at) "
                "VALUES (:id, 'released', 'preparing', :started)"
            ),
            at,
        )
        db.execute(
            text(
                "UPDATE dispatch_jobs SET status = 'failed', closed_at = :failed "
                "WHERE order_id = :id"
            ),
            at | {"failed": failed_at},
        )
        db.execute(
            text("UPDATE orders SET status = 'completed', completed_at = :done WHERE id = :id"),
            at | {"done": order.sla_deadline + timedelta(minutes=10)},
        )
        if told:
            db.execute(
                text(
                    "INSERT INTO sla_escalations (order_id, store_id, deadline, predicted_finish,"
                    " escalated_at) VALUES (:id, :store, :deadline, :deadline, :failed)"
                ),
                at | {"store": store.id, "deadline": order.sla_deadline, "failed": failed_at},
            )

    def silent() -> int:
        return db.scalar(measure._SILENT, {"end": now})

    before = silent()
    late(failed_before_deadline=timedelta(minutes=10), told=True)
    assert silent() == before
    late(failed_before_deadline=timedelta(minutes=10), told=False)
    assert silent() == before + 1
    late(failed_before_deadline=timedelta(minutes=-5), told=True)
    assert silent() == before + 2
