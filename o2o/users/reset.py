"""Password reset by a one-time, short-lived token delivered through the outbox.

A request for an active account creates a random 256-bit token, keeps only its SHA-256, and emits
`user.password_reset_requested` with the token for the e-mail/SMS gateway, which subscribes with a
webhook that names the type exactly (wildcard subscriptions never receive it, `o2o.outbox`). The
caller is answered the same whether or not the account exists. Confirming the token sets the new
password, marks the token used and raises the user's token version, so every earlier bearer token
and console session stops working.
"""

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from o2o import clock, outbox
from o2o.config import get_settings
from o2o.errors import InvalidInput
from o2o.i18n import gettext as _
from o2o.security import hash_password, verify_password
from o2o.users import service
from o2o.users.models import PasswordResetToken, User

EVENT_TYPE = "user.password_reset_requested"
TOKEN_BYTES = 32  # 256 bits


def token_digest(token: str) -> bytes:
    """Return the SHA-256 of a reset token, the only form in which it is stored."""
    return hashlib.sha256(token.encode()).digest()


def request_reset(session: Session, email: str) -> None:
    """Issue a reset token for an active account and emit it for the gateway; otherwise nothing.

    Both paths run the same statements up to the two inserts, and both commit a transaction that
    writes (the unknown path takes a transaction id), so the answer's timing does not tell which
    addresses have accounts.
    """
    now = clock.now()
    expires_at = now + timedelta(minutes=get_settings().password_reset_token_minutes)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    digest = token_digest(token)
    # Locked, so two requests for one account issue their tokens one after the other and only
    # the last one stays valid.
    user = session.scalar(
        select(User).where(func.lower(User.email) == email.strip().lower()).with_for_update()
    )
    active = user is not None and user.is_active
    # A new token replaces every earlier unused one (0 names no user: the unknown path).
    session.execute(
        delete(PasswordResetToken).where(
            PasswordResetToken.user_id == (user.id if active else 0),
            PasswordResetToken.used_at.is_(None),
        )
    )
    if not active:
        session.execute(text("SELECT pg_current_xact_id()"))
        return
    session.add(
        PasswordResetToken(
            user_id=user.id,
            token_hash=digest,
            token_version=user.token_version,
            created_at=now,
            expires_at=expires_at,
        )
    )
    outbox.emit(
        session,
        EVENT_TYPE,
        "user",
        user.id,
        {
            "user_id": user.id,
            "email": user.email,
            "name": user.name,
            "token": token,
            "expires_at": expires_at.isoformat(),
        },
    )
    session.flush()


def _invalid() -> InvalidInput:
    return InvalidInput(
        _(
            "This password reset token is not valid: it was used, it expired, or a newer one was sent. Ask for a new one."
        ),
        code="invalid_reset_token",
        details={"field": "token"},
    )


def confirm_reset(session: Session, token: str, new_password: str) -> User:
    """Set a new password with a reset token (once, before it expires, for an active account)."""
    now = clock.now()
    digest = token_digest(token)
    user_id = session.scalar(
        select(PasswordResetToken.user_id).where(PasswordResetToken.token_hash == digest)
    )
    if user_id is None:
        raise _invalid()
    # The user first, then the token: the order a new request takes them in (no deadlock). A
    # second confirm of the same token waits here and then finds it used.
    user = session.get(User, user_id, with_for_update=True)
    reset = session.scalar(
        select(PasswordResetToken).where(PasswordResetToken.token_hash == digest).with_for_update()
    )
    if (
        user is None
        or reset is None
        or reset.used_at is not None
        or reset.expires_at <= now
        or not user.is_active
        # A password change, a deactivation or another reset since it was issued.
        or reset.token_version != user.token_version
    ):
        raise _invalid()
    if verify_password(new_password, user.password_hash):
        raise InvalidInput(
            _("The new password must differ from the current one."),
            code="password_unchanged",
            details={"field": "new_password"},
        )
    user.password_hash = hash_password(new_password)
    reset.used_at = now
    session.flush()
    service.revoke_tokens(session, user)
    return user
