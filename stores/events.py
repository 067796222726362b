"""What stores tell the floors above it. Subscribers are wired in `o2o.wiring`.

- `stock_below_reserved(session, store_id, shortages)`: a point-of-sale sync counts lots below
  what online orders hold; `shortages` is [(lot_id, new on_hand)], the lots locked. The order
  flow gives way by its stated rule (newest unpaid holds cancelled first, then paid orders lose
  the lot and are flagged for the pharmacist) before the store's count is written.
"""

from o2o.events import Signal

stock_below_reserved = Signal("stock_below_reserved")
