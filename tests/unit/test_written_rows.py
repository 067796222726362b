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


@pytest.mark.parametrize("column", ["created_at", "captured_minor", "id"])
def test_a_column_the_table_would_default_may_not_be_left_unset(column):
    with pytest.raises(ValueError, match=f"payments.{column} must be set"):
        written_values(_payment(**{column: None}), "payment_")
