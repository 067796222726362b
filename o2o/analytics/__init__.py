"""Stock analytics per store: ABC classes of sales value, days of stock, near-expiry value, turnover
and dead stock, computed in SQL from completed order lines and stock lots."""
