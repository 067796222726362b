"""Periodic dispatch work: the SLA monitor, stale claims back to the pool, and the fleet load
around each store (the courier wait the delivery promise adds)."""

import logging
from dataclasses import asdict

from dispatch import actions, fleet, monitor
from o2o.celery_app import app
from o2o.db import session_scope
from o2o.tasks import once_per_period

log = logging.getLogger(__name__)

SLA_MONITOR_EVERY_S = 60
STALE_CLAIMS_EVERY_S = 60
FLEET_LOAD_EVERY_S = 60


def run_sla_monitor() -> dict:
    """Run the SLA monitor once, in its own transaction."""
    with session_scope() as session:
        result = monitor.run(session)
    if result.at_risk or result.breached:
        log.info("sla monitor: %s", result)
    return asdict(result)


def run_return_stale_claims() -> int:
    """Return stale claims to the pool once, in its own transaction."""
    with session_scope() as session:
        return actions.return_stale_claims(session)


@app.task(name="dispatch.sla_monitor")
@once_per_period("dispatch.sla_monitor", SLA_MONITOR_EVERY_S)
def sla_monitor_task() -> dict:
    """Periodic: predict open deliveries, escalate those at risk, record breaches (once each)."""
    return run_sla_monitor()


@app.task(name="dispatch.return_stale_claims")
@once_per_period("dispatch.return_stale_claims", STALE_CLAIMS_EVERY_S)
def return_stale_claims_task() -> int:
    """Periodic: jobs claimed but not picked up in time go back to the pool."""
    return run_return_stale_claims()


def run_fleet_load() -> int:
    """Recompute the courier wait around every delivering store once, in its own transaction."""
    with session_scope() as session:
        return fleet.refresh(session)


@app.task(name="dispatch.fleet_load")
@once_per_period("dispatch.fleet_load", FLEET_LOAD_EVERY_S)
def fleet_load_task() -> int:
    """Periodic: the wait for a courier around each store, for the promise at search/checkout."""
    return run_fleet_load()
