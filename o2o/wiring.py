"""Wire the domains' reactions to the order record's events (the composition root).

Every process that changes orders calls `connect()` once at start: the API (`main.py`), the
Celery worker (`o2o.worker`), the command line and the test suite. Connecting twice is harmless.
"""

from dispatch import events as dispatch_events
from dispatch import runs as dispatch_runs
from dispatch import service as dispatch_service
from o2o.members import service as members_service
from o2o.order_flow import promise, shortfall, substitutions
from o2o.orders import events
from o2o.payments import commissions
from o2o.payments import events as payments_events
from o2o.payments import service as payments_service
from prescriptions import service as prescriptions_service
from stores import events as stores_events


def connect() -> None:
    """Subscribe prescriptions, dispatch and payments to the events of the floors they react to."""
    # A cancelled order closes its prescription request (giving back an approved refill) and
    # its courier job.
    events.order_cancelled.connect(prescriptions_service.on_order_cancelled)
    events.order_cancelled.connect(dispatch_service.on_order_cancelled)
    # A cancelled order calls off its unpaid payment, or refunds what was captured in full.
    events.order_cancelled.connect(payments_service.on_order_cancelled)
    # A cancelled slot order gives its place in the slot back.
    events.order_cancelled.connect(promise.give_back_slot)
    # A closed order gives back the equivalents held for the patient's unanswered questions.
    events.order_cancelled.connect(substitutions.withdraw_pending)
    events.order_completed.connect(substitutions.withdraw_pending)
    # A cancelled pickup-point order closes its parcel; a completed one earns its leader's
    # commission (once).
    events.order_cancelled.connect(dispatch_runs.on_order_cancelled)
    events.order_completed.connect(commissions.on_order_completed)
    # A completed order marks its prescription dispensed (used once).
    events.order_completed.connect(prescriptions_service.mark_dispensed)
    # A completed order earns its patient points; a confirmed refund takes back those of the
    # money given back.
    events.order_completed.connect(members_service.on_order_completed)
    payments_events.refund_settled.connect(members_service.on_refund_settled)
    # A breached delivery pays out "late = free": its compensation is refunded.
    dispatch_events.sla_breached.connect(payments_service.on_sla_breached)
    # A point-of-sale count below what orders hold: the orders give way by the stated rule.
    stores_events.stock_below_reserved.connect(shortfall.resolve)
