"""What dispatch tells the floors above it. Subscribers are wired in `o2o.wiring`.

- `sla_breached(session, order_id, compensation_minor)`: a delivery missed its deadline and the
  order now owes `compensation_minor` ("late = free"); payments refunds it. Sent inside the
  monitor's transaction, with the order row locked by the compensation's update.
"""

from o2o.events import Signal

sla_breached = Signal("sla_breached")
