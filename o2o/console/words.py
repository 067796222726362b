"""The words the console shows for stored values (states, reasons, roles), marked for translation.

The `humanize` filter looks a value up here and translates it; a value missing from this table
is shown as it is stored, with spaces for underscores. A new state or reason gets a line here.
"""

from o2o.i18n import N_

WORDS = {
    # order states and fulfilment
    "awaiting_payment": N_("awaiting payment"),
    "awaiting_prescription": N_("awaiting prescription"),
    "released": N_("released"),
    "preparing": N_("preparing"),
    "ready": N_("ready"),
    "out_for_delivery": N_("out for delivery"),
    "completed": N_("completed"),
    "cancelled": N_("cancelled"),
    "pickup": N_("pickup"),
    "delivery": N_("delivery"),
    "pickup_point": N_("pickup point"),
    # substitution reasons
    "out_of_stock": N_("out of stock"),
    "formulary": N_("formulary"),
    "patient_request": N_("patient's request"),
    # prescription states and audit actions
    "requested": N_("requested"),
    "claimed": N_("claimed"),
    "issued": N_("issued"),
    "declined": N_("declined"),
    "approved": N_("approved"),
    "rejected": N_("rejected"),
    "dispensed": N_("dispensed"),
    "expired": N_("expired"),
    "claim_returned": N_("claim returned"),
    "refill_requested": N_("refill requested"),
    "refill_approved": N_("refill approved"),
    "refill_returned": N_("refill returned"),
    # why a delivery was late
    "not_prepared": N_("not prepared in time"),
    "in_transit": N_("still on the way"),
    "not_collected": N_("not collected by the courier"),
    "no_courier": N_("no courier took it"),
    "delivered_late": N_("delivered late"),
    # payments and refunds
    "pending": N_("pending"),
    "captured": N_("captured"),
    "failed": N_("failed"),
    "succeeded": N_("succeeded"),
    "order_cancelled": N_("order cancelled"),
    "captured_after_cancel": N_("captured after cancelling"),
    "late_delivery": N_("late delivery"),
    "online": N_("online"),
    "at_store": N_("at the store"),
    # roles
    "patient": N_("patient"),
    "doctor": N_("doctor"),
    "pharmacist": N_("pharmacist"),
    "courier": N_("courier"),
    "admin": N_("admin"),
    # why an ordered line is outside its prescription
    "not prescribed": N_("not prescribed"),
    "more than prescribed": N_("more than prescribed"),
    # interaction severities
    "contraindicated": N_("contraindicated"),
    "major": N_("major"),
    "moderate": N_("moderate"),
    "minor": N_("minor"),
}
