"""Create users, sign them in, and link staff to stores."""

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from o2o.errors import Conflict, InvalidInput, NotFound, Unauthorized
from o2o.i18n import gettext as _
from o2o.security import hash_password, verify_password
from o2o.users import throttle
from o2o.users.models import Role, User

STORE_ROLES = {Role.PHARMACIST}


def get_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.email) == email.lower()))


def create_user(
    session: Session,
    *,
    email: str,
    password: str,
    name: str,
    role: Role,
    store_ids: list[int] | None = None,
    created_by: int | None = None,
) -> User:
    """Create a user; staff may be linked to stores that exist."""
    store_ids = sorted(set(store_ids or []))
    if store_ids and role not in STORE_ROLES:
        raise InvalidInput(
            _("Only pharmacists are linked to stores."), code="store_ids_not_allowed"
        )
    if get_by_email(session, email) is not None:
        raise Conflict(_("An account with this email already exists."), code="email_taken")
    user = User(
        email=email,
        name=name,
        password_hash=hash_password(password),
        role=role,
        created_by=created_by,
    )
    session.add(user)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(
            _("An account with this email already exists."), code="email_taken"
        ) from None
    if store_ids:
        link_stores(session, user, store_ids)
    return user


def link_stores(session: Session, user: User, store_ids: list[int]) -> None:
    """Link a staff member to stores (ignores links that exist)."""
    found = set(
        session.scalars(text("SELECT id FROM stores WHERE id = ANY(:ids)"), {"ids": store_ids})
    )
    unknown = sorted(set(store_ids) - found)
    if unknown:
        raise InvalidInput(
            _("Unknown store ids."), code="unknown_store", details={"store_ids": unknown}
        )
    session.execute(
        text(
            "INSERT INTO user_stores (user_id, store_id) "
            "SELECT :uid, unnest(CAST(:ids AS int[])) ON CONFLICT DO NOTHING"
        ),
        {"uid": user.id, "ids": store_ids},
    )
    session.expire(user, ["store_links"])


def authenticate(session: Session, email: str, password: str, client_ip: str) -> User:
    """Return the user for these credentials; failures are rate-limited per account and address."""
    account_key = email.strip().lower()
    throttle.check(account_key, client_ip)
    user = get_by_email(session, account_key)
    if not verify_password(password, user.password_hash if user else None) or not user.is_active:
        throttle.failed(account_key, client_ip)
        raise Unauthorized(_("Wrong email or password."), code="invalid_credentials")
    throttle.succeeded(account_key, client_ip)
    return user


def revoke_tokens(session: Session, user: User) -> None:
    """Raise the user's token version: every token and console session issued before is refused."""
    session.execute(
        update(User).where(User.id == user.id).values(token_version=User.token_version + 1)
    )
    session.refresh(user)


def change_password(session: Session, user: User, current: str, new: str) -> None:
    """Set a new password after checking the current one, and revoke every earlier session."""
    if not verify_password(current, user.password_hash):
        raise InvalidInput(
            _("The current password is wrong."),
            code="wrong_current_password",
            details={"field": "current_password"},
        )
    if current == new:
        raise InvalidInput(
            _("The new password must differ from the current one."),
            code="password_unchanged",
            details={"field": "new_password"},
        )
    user.password_hash = hash_password(new)
    session.flush()
    revoke_tokens(session, user)


def set_active(session: Session, admin: User, user_id: int, *, active: bool) -> User:
    """Deactivate or reactivate an account (effective on its next request); never one's own."""
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFound(_("No such user."), code="user_not_found")
    if user.id == admin.id:
        raise InvalidInput(
            _("You cannot deactivate or reactivate your own account."), code="own_account"
        )
    user.is_active = active
    session.flush()
    revoke_tokens(session, user)
    return user
