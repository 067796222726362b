"""Import every models module so Base.metadata knows the whole schema (Alembic, tests).

This module sits at the top of the import floors: it only collects, nothing imports it but
migrations and tests.
"""

import dispatch.models  # noqa: F401
import dispatch.run_models  # noqa: F401
import o2o.idempotency  # noqa: F401
import o2o.members.models  # noqa: F401
import o2o.orders.models  # noqa: F401
import o2o.outbox  # noqa: F401
import o2o.payments.commissions  # noqa: F401
import o2o.payments.models  # noqa: F401
import o2o.users.models  # noqa: F401
import o2o.webhooks.models  # noqa: F401
import prescriptions.models  # noqa: F401
import stores.models  # noqa: F401
import stores.pickup_points  # noqa: F401
