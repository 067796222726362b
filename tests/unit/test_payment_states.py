"""The payment state machine and the refund rules, pure."""

import pytest

from o2o.payments import states
from o2o.payments.models import PaymentStatus, RefundStatus
from o2o.payments.states import Action

P = PaymentStatus
R = RefundStatus


def capture(status, *, amount=1000, currency="CNY", order_open=True):
    return states.on_capture(
        status,
        amount_minor=amount,
        currency=currency,
        expected_minor=1000,
        expected_currency="CNY",
        order_open=order_open,
    )


@pytest.mark.parametrize("status", [P.PENDING, P.FAILED])
def test_a_capture_of_an_unpaid_order_moves_it_on(status):
    assert capture(status) == states.CaptureDecision(P.CAPTURED, Action.MOVE_ORDER_ON)


def test_a_capture_after_the_order_closed_is_refunded():
    assert capture(P.CANCELLED).action is Action.REFUND_ALL
    # Cancelled while the capture was on its way (payment not yet called off): the same.
    assert capture(P.PENDING, order_open=False).action is Action.REFUND_ALL


def test_a_second_capture_changes_nothing():
    decision = capture(P.CAPTURED)
    assert decision.action is Action.NONE and decision.ignored


@pytest.mark.parametrize("status", list(P))
@pytest.mark.parametrize(("amount", "currency"), [(999, "CNY"), (1001, "CNY"), (1000, "USD")])
def test_a_wrong_amount_or_currency_is_refused_in_every_state(status, amount, currency):
    with pytest.raises(states.AmountMismatch) as info:
        capture(status, amount=amount, currency=currency)
    assert info.value.status_code == 422


def test_only_a_pending_payment_fails():
    assert states.on_failure(P.PENDING) == (P.FAILED, None)
    for status in (P.CAPTURED, P.CANCELLED, P.FAILED):
        assert states.on_failure(status)[0] is status
        assert states.on_failure(status)[1]


@pytest.mark.parametrize("status", [P.PENDING, P.FAILED, P.CANCELLED])
def test_a_refund_reported_before_the_capture_is_asked_for_again(status):
    with pytest.raises(states.NotCapturedYet) as info:
        states.on_refund_report(status, R.REQUESTED, succeeded=True)
    assert info.value.status_code == 409


def test_refund_reports_settle_a_refund_once():
    assert states.on_refund_report(P.CAPTURED, R.REQUESTED, succeeded=True) == (R.SUCCEEDED, None)
    assert states.on_refund_report(P.CAPTURED, R.REQUESTED, succeeded=False) == (R.FAILED, None)
    assert states.on_refund_report(P.CAPTURED, R.FAILED, succeeded=True) == (R.SUCCEEDED, None)
    assert states.on_refund_report(P.CAPTURED, R.SUCCEEDED, succeeded=False)[0] is R.SUCCEEDED
    assert states.on_refund_report(P.CAPTURED, R.FAILED, succeeded=False)[1]


def test_refunds_never_exceed_the_capture():
    ledger = [(R.SUCCEEDED, 300), (R.REQUESTED, 200), (R.FAILED, 400)]
    assert states.refundable(1000, ledger) == 500
    assert states.refund_for_cancel(1000, ledger) == 500
    states.check_refund(500, 1000, ledger)
    with pytest.raises(states.RefundTooLarge):
        states.check_refund(501, 1000, ledger)
    with pytest.raises(states.RefundTooLarge):
        states.check_refund(0, 1000, ledger)
    assert states.refundable(100, [(R.SUCCEEDED, 100)]) == 0


def test_late_delivery_refunds_the_compensation_within_what_is_left():
    assert states.refund_for_late_delivery(500, 1700, []) == 500
    assert states.refund_for_late_delivery(500, 1700, [(R.REQUESTED, 1500)]) == 200
    assert states.refund_for_late_delivery(0, 1700, []) == 0
