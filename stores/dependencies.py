"""Load a store from the path or refuse, and check the caller works there."""

from typing import Annotated

from fastapi import Depends

from o2o.api import RowId
from o2o.db import DbSession
from o2o.errors import Forbidden
from o2o.i18n import gettext as _
from o2o.users.dependencies import CurrentUser
from o2o.users.models import Role, User
from stores import service
from stores.models import Store


def valid_store_id(store_id: RowId, session: DbSession) -> Store:
    """Load the store named in the path, or refuse with 404 store_not_found."""
    return service.get_store(session, store_id)


ValidStore = Annotated[Store, Depends(valid_store_id)]


def require_store_staff(user: CurrentUser, store: ValidStore) -> User:
    """Depend on an admin or a pharmacist linked to the path's store; others get 403.

    The user comes first: an anonymous caller gets 401 before any store lookup.
    """
    if user.role is Role.ADMIN or (user.role is Role.PHARMACIST and store.id in user.store_ids):
        return user
    raise Forbidden(
        _("You are not staff of this store."),
        code="not_store_staff",
        details={"store_id": store.id},
    )


StoreStaff = Annotated[User, Depends(require_store_staff)]
