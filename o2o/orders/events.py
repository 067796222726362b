"""What the order record tells the domains above it. Subscribers are wired in `o2o.wiring`.

Each is sent inside the transaction that made the change, with the order locked:
- `order_cancelled(session, order)`: the order was cancelled and its stock given back
  (prescriptions close its request, dispatch closes its job);
- `order_completed(session, order, actor_id=...)`: the goods were handed over
  (prescriptions mark the prescription dispensed).
"""

from o2o.events import Signal

order_cancelled = Signal("order_cancelled")
order_completed = Signal("order_completed")
