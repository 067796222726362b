"""What payments tell the floors above them. Subscribers are wired in `o2o.wiring`.

- `refund_settled(session, order_id=..., refund_id=..., paid_minor=...)`: the payment app
  confirmed a refund; `paid_minor` is what the patient has paid for the order once every
  confirmed refund is taken off (members reverse the points earned on the money given back).
  Sent inside the transaction that records the confirmation, with the order and payment locked.
"""

from o2o.events import Signal

refund_settled = Signal("refund_settled")
