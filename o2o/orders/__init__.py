"""The order record: the order, its lines and allocations, its states and its lifecycle.

It knows stores and core only; the domains above react to its events (`events.py`)."""
