"""Wire the domains' reactions to the order record's events (the composition root).

Every process that changes orders calls `connect()` once at start: the API (`main.py`), the
Celery worker (`o2o.worker`), the command line and the test suite. Connecting twice is harmless.
"""

from dispatch import service as dispatch_service
from o2o.orders import events
from prescriptions import service as prescriptions_service


def connect() -> None:
    """Subscribe prescriptions and dispatch to the order record's events."""
    # A cancelled order closes its prescription request (giving back an approved refill) and
    # its courier job.
    events.order_cancelled.connect(prescriptions_service.on_order_cancelled)
    events.order_cancelled.connect(dispatch_service.on_order_cancelled)
    # A completed order marks its prescription dispensed (used once).
    events.order_completed.connect(prescriptions_service.mark_dispensed)
