"""The outbox relay's periodic task (its name and beat entry predate the move to core)."""

from dataclasses import asdict

from o2o.celery_app import app
from o2o.db import session_scope
from o2o.webhooks import relay

RELAY_EVERY_S = 5


# No once_per_period: relays may overlap safely (deliveries are leased with SKIP LOCKED), and more
# workers should be able to share a backlog.
@app.task(name="dispatch.relay_outbox")
def relay_outbox_task() -> dict:
    """Periodic: send outbox events to the webhook endpoints that want them, with retries."""
    return asdict(relay.relay(session_scope))
