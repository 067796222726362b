"""The order state machine: every pair of states, pure."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from o2o.orders import states
from o2o.orders.models import Fulfillment, OrderStatus
from o2o.orders.states import PATIENT_CANCELLABLE, IllegalTransition, allowed, check

S = OrderStatus
P, D, PP = Fulfillment.PICKUP, Fulfillment.DELIVERY, Fulfillment.PICKUP_POINT

LEGAL = (
    {
        # Paid: on to the prescription, or released (`after_payment` says which).
        (S.AWAITING_PAYMENT, S.AWAITING_PRESCRIPTION, P),
        (S.AWAITING_PAYMENT, S.AWAITING_PRESCRIPTION, D),
        (S.AWAITING_PAYMENT, S.RELEASED, P),
        (S.AWAITING_PAYMENT, S.RELEASED, D),
        (S.AWAITING_PRESCRIPTION, S.RELEASED, P),
        (S.AWAITING_PRESCRIPTION, S.RELEASED, D),
        (S.RELEASED, S.PREPARING, P),
        (S.RELEASED, S.PREPARING, D),
        (S.PREPARING, S.READY, P),
        (S.PREPARING, S.READY, D),
        (S.READY, S.OUT_FOR_DELIVERY, D),
        (S.OUT_FOR_DELIVERY, S.READY, D),
        (S.READY, S.COMPLETED, P),
        (S.OUT_FOR_DELIVERY, S.COMPLETED, D),
    }
    | {
        (s, S.CANCELLED, f)
        for s in (S.AWAITING_PAYMENT, S.AWAITING_PRESCRIPTION, S.RELEASED, S.PREPARING, S.READY)
        for f in (P, D)
    }
    | {
        (S.OUT_FOR_DELIVERY, S.CANCELLED, D),
        # Unreachable (a pickup is never out for delivery), and harmless: any open order may end.
        (S.OUT_FOR_DELIVERY, S.CANCELLED, P),
    }
    | {
        # A pickup-point order: packed at the store, carried in the store's run, ready again at
        # the point, completed at the leader's counter; cancellable while open.
        (S.AWAITING_PAYMENT, S.AWAITING_PRESCRIPTION, PP),
        (S.AWAITING_PAYMENT, S.RELEASED, PP),
        (S.AWAITING_PRESCRIPTION, S.RELEASED, PP),
        (S.RELEASED, S.PREPARING, PP),
        (S.PREPARING, S.READY, PP),
        (S.READY, S.OUT_FOR_DELIVERY, PP),
        (S.OUT_FOR_DELIVERY, S.READY, PP),
        (S.READY, S.COMPLETED, PP),
        *(
            (s, S.CANCELLED, PP)
            for s in (
                S.AWAITING_PAYMENT,
                S.AWAITING_PRESCRIPTION,
                S.RELEASED,
                S.PREPARING,
                S.READY,
                S.OUT_FOR_DELIVERY,
            )
        ),
    }
)


@pytest.mark.parametrize(
    ("current", "to", "fulfillment"), list(itertools.product(S, S, Fulfillment))
)
def test_exactly_the_designed_transitions_are_allowed(current, to, fulfillment):
    assert allowed(current, to, fulfillment) == ((current, to, fulfillment) in LEGAL)


def test_illegal_transition_is_a_409_naming_both_states():
    with pytest.raises(IllegalTransition) as info:
        check(S.COMPLETED, S.CANCELLED, P)
    assert info.value.status_code == 409
    assert info.value.code == "illegal_transition"
    assert info.value.details == {"status": "completed", "requested": "cancelled"}


def test_pickup_skips_the_courier_and_delivery_cannot_complete_at_the_counter():
    assert not allowed(S.READY, S.OUT_FOR_DELIVERY, P)
    assert not allowed(S.READY, S.COMPLETED, D)


def test_patients_cannot_cancel_once_the_courier_has_it():
    assert S.OUT_FOR_DELIVERY not in PATIENT_CANCELLABLE
    assert S.READY in PATIENT_CANCELLABLE
    assert S.AWAITING_PAYMENT in PATIENT_CANCELLABLE


def test_a_paid_order_waits_for_its_prescription_only_with_prescription_items():
    assert states.after_payment(is_rx=True) is S.AWAITING_PRESCRIPTION
    assert states.after_payment(is_rx=False) is S.RELEASED


def test_the_payment_and_prescription_holds_run_from_placing_and_from_paying():
    at = datetime(2026, 11, 23, 23, 50, tzinfo=UTC)
    assert states.payment_hold_expires(at, 15) == datetime(2026, 11, 24, 0, 5, tzinfo=UTC)
    assert states.prescription_hold_expires(at, 24) == at + timedelta(days=1)


def test_the_sla_deadline_is_release_plus_the_sla():
    released = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert states.sla_deadline(released, 120) == released + timedelta(hours=2)
