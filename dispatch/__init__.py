"""Fulfilment routing, pickup, courier jobs, ETA, the SLA monitor and its reports."""
