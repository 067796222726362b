"""The INSERTs built from a table (`o2o.db.insert_values`, `written_values`): every column is
named, so a column the table would fill in itself must be given."""

import uuid

import pytest

from o2o import clock
from o2o.db import insert_values, written_values
from o2o.payments.models import Payment, PaymentMethod, PaymentStatus


def _payment(**overrides) -> Payment:
    values = {
        "id": uuid.uuid4(),
        "order_id": uuid.uuid4(),
        "method": PaymentMethod.AT_STORE,
        "status": PaymentStatus.PENDING,
        "amount_minor": 1850,
        "currency": "CNY",
        "captured_minor": 0,
        "created_at": clock.now(),
    }
    return Payment(**(values | overrides))


def test_every_column_of_the_table_is_written_under_its_prefixed_name():
    columns, values, params = insert_values(Payment.__table__, "payment_")
    payment = _payment()
    written = written_values(payment, "payment_")
    names = [c.name for c in Payment.__table__.columns]
    assert columns.split(", ") == names
    assert values.split(", ") == [f":payment_{name}" for name in names]
    assert sorted(written) == sorted(p.key for p in params)
    # A column never set is written as NULL, and the object now holds that None.
    assert written["payment_psp_reference"] is None and payment.psp_reference is None


def test_a_computed_column_is_written_by_its_expression_with_no_parameter():
    # An online payment's app is read by its own statement (o2o.payments.service.open_payment).
    columns, values, params = insert_values(
        Payment.__table__, "payment_", computed={"app_id": "(SELECT id FROM app)"}
    )
    names = [c.name for c in Payment.__table__.columns]
    assert columns.split(", ") == names
    assert values.split(", ") == [
        "(SELECT id FROM app)" if name == "app_id" else f":payment_{name}" for name in names
    ]
    written = written_values(_payment(), "payment_", skip=("app_id",))
    assert sorted(written) == sorted(p.key for p in params)
    assert "payment_app_id" not in written


@pytest.mark.parametrize("column", ["created_at", "captured_minor", "id"])
def test_a_column_the_table_would_default_may_not_be_left_unset(column):
    with pytest.raises(ValueError, match=f"payments.{column} must be set"):
        written_values(_payment(**{column: None}), "payment_")
