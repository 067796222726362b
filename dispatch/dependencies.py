"""Who may use the dispatch endpoints: couriers, store staff, admins."""

from typing import Annotated

from fastapi import Depends

from o2o.users.dependencies import (
    get_current_user_async,
    get_current_user_driver,
    require_role,
)
from o2o.users.models import Role, User

CourierUser = Annotated[User, Depends(require_role(Role.COURIER))]
# For async endpoints on a session (the job board): loaded on the async engine, in the event loop.
AsyncCourierUser = Annotated[
    User, Depends(require_role(Role.COURIER, current=get_current_user_async))
]
# For the next-job claim and the position report, whose work runs on the driver's connection
# with no session: loaded on that connection (a detached copy, for reading).
DriverCourierUser = Annotated[
    User, Depends(require_role(Role.COURIER, current=get_current_user_driver))
]
StaffOrAdmin = Annotated[User, Depends(require_role(Role.PHARMACIST, Role.ADMIN))]
