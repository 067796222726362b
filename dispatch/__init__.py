"""Fulfilment routing, pickup, courier jobs, ETA, the SLA monitor and outbound webhooks."""
