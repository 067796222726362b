"""The order flow: checkout, the store's actions on orders, the order API and its tasks.

It stands above the domains and calls them through their `service` modules."""
