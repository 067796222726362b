"""Who may use the dispatch endpoints: couriers, store staff, admins."""

from typing import Annotated

from fastapi import Depends

from o2o.users.dependencies import require_role
from o2o.users.models import Role, User

CourierUser = Annotated[User, Depends(require_role(Role.COURIER))]
StaffOrAdmin = Annotated[User, Depends(require_role(Role.PHARMACIST, Role.ADMIN))]
