"""A simulated day in the demo city, run through the real services on an accelerated clock.

Patients order (some need a prescription: a doctor signs one, the store's pharmacist approves
it), pharmacists prepare and mark orders ready, couriers poll the job board, claim, ride to the
store, pick up, ride to the door and hand over with the delivery code; the SLA monitor and the
stale-claim sweep run every simulated minute. Every step is a real service call in its own
transaction, with `now` from the simulated clock (`o2o.clock.use`).

The same day (seed, demand, couriers and their speeds) is replayed twice: with the platform's
ranking (escalated first, deadline buckets, nearest store) and with a plain first-come-first-
served dispatcher (oldest job first), and the two SLA reports are printed side by side.

It empties the database it runs on, so the command refuses any database whose name does not end
in `_sim`; `make simulate` (scripts/simulate.sh) gives it one of its own. This package is a tool
at the composition floor: it calls the order flow from above, as the API does. `day` draws the
plan, `run` replays it, `report` compares the policies, `cli` is the command.
"""
