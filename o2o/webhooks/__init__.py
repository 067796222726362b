"""Webhooks: the endpoints outbox events are sent to, and the relay that sends them."""
